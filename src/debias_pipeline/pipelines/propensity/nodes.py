"""The propensity nodes: estimate P(o = 1) for each train positive and hand it to the
models with the train data (the logic is ``training.propensities``)."""

from debias_pipeline.training.propensities import attach_propensities, estimate_propensities, propensity_mlflow_metrics

__all__ = ["attach_propensities", "estimate_propensities", "propensity_mlflow_metrics"]
