"""Core of the LLMOps platform: settings, errors and the `llmops` command line."""
