"""flockwatch.training."""
