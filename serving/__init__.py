"""Serving: load a registered model by alias and answer questions, one at a time or in batch."""
