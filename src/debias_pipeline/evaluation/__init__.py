"""Evaluation: metrics, protocols, estimators."""
