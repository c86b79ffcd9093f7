"""flockwatch.models."""
