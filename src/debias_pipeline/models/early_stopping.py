"""Early stopping, and how well a validation signal picks an epoch.

``EarlyStopping`` is the rule every iterative model's epoch loop follows
(``models.base.run_with_early_stopping``): it follows the mean of the last ``window``
validation evaluations and stops after ``patience`` evaluations without a better mean.
The same rule replayed on a recorded curve (``stopping_pick``) tells which evaluation a
signal would have picked; ``fixed_budget_picks``, ``regret`` and ``rank_correlation``
measure the picks against a target curve (``scripts/selection_signals.py``).
"""

from __future__ import annotations

import collections
import math

import numpy as np


class EarlyStopping:
    """The stopping rule: a trailing mean of ``window`` evaluations, ``patience``
    evaluations without a strictly better mean before stopping."""

    def __init__(self, patience: int, window: int = 1) -> None:
        if patience < 1 or window < 1:
            raise ValueError(f"patience and window must be >= 1, got {patience} and {window}")
        self.patience = patience
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self.best = -math.inf
        self.since_best = 0

    def update(self, score: float) -> bool:
        """Record one evaluation; whether its trailing mean is the best so far."""
        self._recent.append(score)
        smoothed = sum(self._recent) / len(self._recent)
        if smoothed > self.best:
            self.best, self.since_best = smoothed, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no better mean."""
        return self.since_best >= self.patience


def stopping_pick(curve: np.ndarray, patience: int, window: int = 1) -> int:
    """The index of the evaluation ``EarlyStopping`` keeps on a recorded ``curve`` (one
    value per evaluation, higher is better), as if training had run under it."""
    rule, pick = EarlyStopping(patience, window), 0
    for index, value in enumerate(np.asarray(curve, dtype=np.float64)):
        if rule.update(float(value)):
            pick = index
        if rule.stop:
            break
    return pick


def fixed_budget_picks(curves: np.ndarray) -> np.ndarray:
    """A fixed epoch budget chosen across seeds, out of sample: for each seed (row), the
    evaluation where the mean curve of the *other* seeds peaks (first one on ties).

    Args:
        curves: (n_seeds >= 2, n_evaluations) the validation signal per seed.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] < 2:
        raise ValueError(f"a budget chosen across seeds needs >= 2 seeds' curves, got shape {curves.shape}")
    others = (curves.sum(axis=0, keepdims=True) - curves) / (curves.shape[0] - 1)
    return np.argmax(others, axis=1)


def regret(target: np.ndarray, pick: int) -> float:
    """How much of the target curve's best value the picked evaluation gives away."""
    target = np.asarray(target, dtype=np.float64)
    return float(np.max(target) - target[pick])


def rank_correlation(signal: np.ndarray, target: np.ndarray) -> float:
    """Spearman's ρ between a signal and the target over the evaluations (NaN when either
    is constant)."""
    signal, target = np.asarray(signal, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if np.ptp(signal) == 0 or np.ptp(target) == 0:
        return math.nan
    from scipy import stats  # scipy.stats takes ~0.7 s to import: only when needed

    return float(stats.spearmanr(signal, target).statistic)
