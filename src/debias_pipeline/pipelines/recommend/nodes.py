"""The ``recommend`` node: a trained model's top-N for named users, printed and saved."""

from __future__ import annotations

import logging

import pandas as pd

from debias_pipeline.config.params import Params, require
from debias_pipeline.serving.recommender import TrainedRecommenders, load_recommender

logger = logging.getLogger(__name__)


class RecommendConfig(Params):
    """The ``recommend`` parameter block.

    Attributes:
        model: the model namespace (``lightgcn``, ``dual``, ``recrec_i``, ...).
        user: the user (original id), several as a list or separated by spaces
            (``--params=recommend.user="20 21"``).
        k: items per user.
        keep_train: also rank the user's train items (left out by default).
        include_genres: keep only items with at least one of these genres.
        exclude_genres: drop items with any of these genres.
        version: a version of ``<model>.recommender`` (default: the newest trained on
            the run's dataset).
        model_uri: an MLflow model instead (``models:/movielens_100k-lightgcn/1``,
            ``runs:/<run id>/lightgcn``).
    """

    model: str = "lightgcn"
    user: str | int | tuple[str | int, ...] | None = None
    k: int = 10
    keep_train: bool = False
    include_genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()
    version: str | None = None
    model_uri: str | None = None

    def check(self) -> None:
        require(self.k >= 1, f"k must be >= 1, got {self.k}")

    @property
    def users(self) -> list[str]:
        values = self.user if isinstance(self.user, tuple) else (self.user,)
        return [part for value in values for part in str(value).split()]


def recommend_for_users(trained_recommenders: TrainedRecommenders, recommend: RecommendConfig, dataset: str) -> pd.DataFrame:
    """The top ``k`` of each user of ``recommend.user``; printed as a table.

    Returns:
        One row per (user, rank): user, rank, item, title, genres, score (and the
        exposure probability for the dual model), source.

    Raises:
        FileNotFoundError: When no such model was trained (naming the pipeline to run).
        RecommendationError: For an unknown user or genre.
    """
    require(bool(recommend.users), "parameter 'recommend.user' must name at least one user (recommend.user=20)")
    if recommend.model_uri is not None:
        recommender = load_recommender(recommend.model_uri)
    else:
        recommender = trained_recommenders.load(recommend.model, dataset, recommend.version)
    table = recommender.recommend_many(
        recommend.users,
        recommend.k,
        exclude_train=not recommend.keep_train,
        include_genres=recommend.include_genres,
        exclude_genres=recommend.exclude_genres,
    )
    with pd.option_context("display.max_colwidth", 48, "display.width", 160):
        text = table.drop(columns="source").to_string(index=False, float_format=lambda v: f"{v:.4f}")
    print(f"\nTop {recommend.k} of {recommender.name} on {recommender.dataset}:\n{text}\n", flush=True)  # noqa: T201
    return table
