#!/usr/bin/env bash
# Evidently 0.7 does not import with pandas 3 (this project's pin), so the benchmark's comparison column runs it in
# its own venv with pandas 2: benchmarks/.venv-evidently (git-ignored). `benchmarks/monitoring.py` uses it when present.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
rm -rf .venv-evidently
"$PYTHON" -m venv .venv-evidently
.venv-evidently/bin/python -m pip install -q --upgrade "pip>=24"
.venv-evidently/bin/pip install -q "evidently==0.7.23" "pandas<3"
.venv-evidently/bin/python -c "import evidently, pandas; print('evidently', evidently.__version__, 'pandas', pandas.__version__)"
