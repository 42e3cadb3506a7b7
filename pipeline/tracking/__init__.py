"""MLflow: the store, one run per training, a sweep's parent run, the pyfunc model."""
