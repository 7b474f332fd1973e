"""Training: feature caching, cross-validation with early stopping, and final models."""
