"""Experiments: hyperparameter tuning, parallel tasks on Dask workers and the summary of the newest metrics."""
