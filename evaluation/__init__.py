"""Evaluation: deterministic metrics, MLflow scorers, quality gates."""
