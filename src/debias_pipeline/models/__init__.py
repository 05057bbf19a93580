"""Recommenders: one file per model, the contract every model keeps (``contract``),
the training machinery (``trainers``, ``minibatch``, ``early_stopping``) and the
registry (``registry``).

Importing the package registers the ensemble, which builds its members through the
registry (``ensemble.py``).
"""

from debias_pipeline.models import ensemble  # noqa: F401  (registers "ensemble")
