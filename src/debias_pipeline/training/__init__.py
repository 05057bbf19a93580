"""Training: what a run trains on (inputs), the compute device and learning curves for MLflow."""
