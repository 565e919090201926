"""MLflow Project steps: data preparation, tuning and the pipeline driver."""
