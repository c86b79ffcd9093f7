"""flockwatch.serving."""
