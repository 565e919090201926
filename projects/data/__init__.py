"""Data preparation: SQL over a warehouse -> clean -> instruction template -> split -> versioned datasets."""
