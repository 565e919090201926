"""Human feedback on served answers: capture with provenance (POST /feedback, `llmops feedback add`, bulk import),
review batches, reports per model version; the data step folds the store into the next dataset version."""
