"""The Kedro framework glue: the project context, hooks (parameter checks, MLflow, the run journal) and run clean-up."""
