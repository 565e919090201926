"""Prompt templates (YAML files parsed by a strict model), their Prompt Registry sync, and chain definitions."""
