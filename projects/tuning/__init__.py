"""Tuning backends wrapped as the MLflow Project entry point `tune`."""
