"""Model registry: packaging the chain as a pyfunc version, aliases dev/staging/production, promotion."""
