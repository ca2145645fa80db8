"""Training: features parquet -> arrays, validation split, metrics, loop, artifacts."""
