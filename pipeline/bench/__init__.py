"""The speed benchmark: `python -m pipeline.bench` (see `__main__`)."""
