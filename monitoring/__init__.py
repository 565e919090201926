"""Monitoring: skew (eval split vs production inputs) and drift (inputs over time) over the inference log, with
calibrated alarms, operational metrics per window and version, MLflow runs with plots, and a retuning trigger.

MLflow has no drift feature, and the maintained library with text descriptors (Evidently 0.7) neither imports with
pandas 3 nor keeps its false-alarm rate near alpha (see docs/monitoring.md for the measurements). The statistics
here are two-sample tests whose p-values are valid under the null by construction (rank tests, hypergeometric
tails, MMD with a permutation null), corrected across features with Holm, and checked by seeded calibration tests.

Layering: imports `llmops` core only (never `serving`); the inference-log schema lives in `llmops.records`.
"""
