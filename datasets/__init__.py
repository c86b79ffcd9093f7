"""flockwatch.datasets."""
