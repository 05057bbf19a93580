"""Evaluation on biased logs: propensity estimation (``propensity``) and off-policy
estimators of ranking metrics (``offpolicy``)."""
