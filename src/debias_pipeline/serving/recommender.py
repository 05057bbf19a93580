"""Top-N recommendations in the dataset's own ids, with titles and genres.

A ``TrainedRecommender`` is a fitted model plus what it takes to answer in original
ids: the id maps, the item metadata, the train positives (excluded by default, and the
popularity fallback). Training pipelines save one per (dataset, model) as the versioned
``<model>.recommender`` and log it to MLflow as a pyfunc model
(``debias_pipeline.serving.server``); ``load_recommender`` reads either back.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import Recommender, TrainData
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.registry import model_class

GENRE_SEPARATOR = "|"


class RecommendationError(ValueError):
    """A request that cannot be answered: unknown user or item, bad k or genre."""


def _plain_id(value: Any) -> str:
    """An id as the text it is written with (``20``, ``"20"`` and ``20.0`` are one user)."""
    if isinstance(value, bool):
        raise RecommendationError(f"an id must be a string or an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise RecommendationError(f"an id must be a non-empty string or an integer, got {value!r}")


class TrainedRecommender:
    """A fitted model answering in original ids.

    Args:
        dataset: the dataset's name.
        model: the fitted model (its users and items are the 0-based ids).
        user_ids, item_ids: the original id of each 0-based user / item.
        items: one row per 0-based item: ``title`` and ``genres`` (``|``-joined) where
            the dataset has them.
        train: the train positives, (n_users, n_items) CSR.
    """

    def __init__(
        self,
        dataset: str,
        model: Recommender,
        user_ids: Sequence[Any],
        item_ids: Sequence[Any],
        items: pd.DataFrame,
        train: sp.csr_matrix,
    ) -> None:
        self.dataset = dataset
        self.model = model
        self.user_ids = np.array([_plain_id(u) for u in user_ids], dtype=object)
        self.item_ids = np.array([_plain_id(i) for i in item_ids], dtype=object)
        self.train = sp.csr_matrix(train)
        if self.train.shape != (self.user_ids.size, self.item_ids.size):
            raise ValueError(f"train positives {self.train.shape} do not match the id maps")
        self.titles = _column(items, "title", self.item_ids.size)
        self.genres = _column(items, "genres", self.item_ids.size)
        self._genre_sets = [frozenset(g for g in text.split(GENRE_SEPARATOR) if g) for text in self.genres]
        self._known_genres = frozenset().union(*self._genre_sets)
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._item_index = {i: j for j, i in enumerate(self.item_ids)}
        self.popularity = np.asarray(self.train.sum(axis=0)).ravel().astype(np.float64)
        self._exposure = _exposure_factors(model)

    # ---- building and storing -------------------------------------------------------------

    def package(self) -> dict[str, Any]:
        """Plain data (tensors on the CPU, arrays, tables) from which ``from_package``
        rebuilds it: what the ``<model>.recommender`` artifact and the MLflow model hold."""
        return {
            "dataset": self.dataset,
            "state": self.model.state_dict(),
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "items": pd.DataFrame({"title": self.titles, "genres": self.genres}),
            "train": self.train,
        }

    @classmethod
    def from_package(cls, package: dict[str, Any], device: torch.device | str = "cpu") -> TrainedRecommender:
        """Rebuild from ``package()`` output (the model restored on ``device``)."""
        from debias_pipeline.data.processing import build_normalized_adjacency

        state, train = package["state"], sp.csr_matrix(package["train"])
        model = model_class(state["model"])(state["config"], seed=state["seed"], device=device)
        model.load_state_dict(state, TrainData(train, build_normalized_adjacency(train)))
        return cls(package["dataset"], model, package["user_ids"], package["item_ids"], package["items"], train)

    # ---- asking -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model.name

    def user_index(self, user: Any) -> int:
        key = _plain_id(user)
        if key not in self._user_index:
            raise RecommendationError(
                f"unknown user {key!r}: {self.dataset} has {self.user_ids.size} users "
                f"({', '.join(self.user_ids[:3])}, ...); give the user's history to fold them in"
            )
        return self._user_index[key]

    def item_index(self, items: Iterable[Any]) -> np.ndarray:
        indices = []
        for item in items:
            key = _plain_id(item)
            if key not in self._item_index:
                raise RecommendationError(f"unknown item {key!r}: not among the {self.item_ids.size} items of {self.dataset}")
            indices.append(self._item_index[key])
        return np.array(indices, dtype=np.int64)

    def score(self, user: Any, items: Iterable[Any]) -> np.ndarray:
        """Preference scores of ``items`` (original ids) for ``user``."""
        return self.model.score(np.array([self.user_index(user)]))[0, self.item_index(items)]

    def recommend(
        self,
        user: Any,
        k: int = 10,
        *,
        exclude_train: bool = True,
        include_genres: Iterable[str] = (),
        exclude_genres: Iterable[str] = (),
    ) -> pd.DataFrame:
        """The ``k`` best items for ``user`` (original id): one row per rank with ``item``,
        ``title``, ``genres``, ``score`` (and ``exposure``, σ(ô), for the dual model).

        Ties are broken by the item's position in the dataset's id map. Train items are
        left out unless ``exclude_train`` is false; ``include_genres`` keeps items with
        at least one of them, ``exclude_genres`` drops items with any of them.
        """
        index = self.user_index(user)
        scores = self.model.score(np.array([index]))[0].astype(np.float64)
        seen = self.train[index].indices if exclude_train else np.array([], dtype=np.int64)
        table = self._top(scores, k, seen, include_genres, exclude_genres)
        if self._exposure is not None:
            users, items = self._exposure
            logits = items[table.pop("index").to_numpy()] @ users[index]
            table["exposure"] = 1.0 / (1.0 + np.exp(-logits))
        else:
            table = table.drop(columns="index")
        return table.assign(user=self.user_ids[index], source="model")[
            ["user", "rank", "item", "title", "genres", "score", *(["exposure"] if self._exposure is not None else []), "source"]
        ]

    def recommend_many(self, users: Iterable[Any], k: int = 10, **options: Any) -> pd.DataFrame:
        """``recommend`` for each of ``users``, one table."""
        return pd.concat([self.recommend(user, k, **options) for user in users], ignore_index=True)

    def recommend_history(
        self,
        history: Iterable[Any],
        k: int = 10,
        *,
        include_genres: Iterable[str] = (),
        exclude_genres: Iterable[str] = (),
    ) -> pd.DataFrame:
        """Top ``k`` for a user the model was not trained on, from the items they clicked
        (original ids, left out of the answer). A model that folds users in (WMF) scores
        them; any other answers with the items' train popularity (``source`` says which)."""
        clicked = np.unique(self.item_index(history))
        if self.model.supports_fold_in:
            row = sp.csr_matrix((np.ones(clicked.size), (np.zeros(clicked.size, dtype=np.int64), clicked)), shape=(1, self.item_ids.size))
            scores, source = self.model.fold_in(row)[0].astype(np.float64), "fold_in"
        else:
            scores, source = self.popularity.copy(), "popularity"
        table = self._top(scores, k, clicked, include_genres, exclude_genres).drop(columns="index")
        return table.assign(user=None, source=source)[["user", "rank", "item", "title", "genres", "score", "source"]]

    def _top(
        self,
        scores: np.ndarray,
        k: int,
        excluded: np.ndarray,
        include_genres: Iterable[str],
        exclude_genres: Iterable[str],
    ) -> pd.DataFrame:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RecommendationError(f"k must be a positive integer, got {k!r}")
        allowed = np.ones(self.item_ids.size, dtype=bool)
        allowed[excluded] = False
        allowed &= self._genre_mask(include_genres, keep=True) & self._genre_mask(exclude_genres, keep=False)
        candidates = np.flatnonzero(allowed)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][: int(k)]
        return pd.DataFrame(
            {
                "rank": np.arange(1, order.size + 1),
                "index": order,
                "item": self.item_ids[order],
                "title": self.titles[order],
                "genres": self.genres[order],
                "score": scores[order],
            }
        )

    def _genre_mask(self, genres: Iterable[str], *, keep: bool) -> np.ndarray:
        wanted = {str(g) for g in ([genres] if isinstance(genres, str) else genres)}
        if not wanted:
            return np.ones(self.item_ids.size, dtype=bool)
        unknown = sorted(wanted - self._known_genres)
        if unknown:
            raise RecommendationError(
                f"unknown genre(s) {unknown}; {self.dataset} has: {', '.join(sorted(self._known_genres)) or 'no genres'}"
            )
        has = np.array([not wanted.isdisjoint(genres) for genres in self._genre_sets], dtype=bool)
        return has if keep else ~has

    def __repr__(self) -> str:
        return f"TrainedRecommender({self.name} on {self.dataset}: {self.user_ids.size} users, {self.item_ids.size} items)"


def _column(items: pd.DataFrame | None, name: str, size: int) -> np.ndarray:
    if items is None or name not in items:
        return np.full(size, "", dtype=object)
    values = items[name].astype(object).where(items[name].notna(), "").astype(str).to_numpy(dtype=object)
    if values.size != size:
        raise ValueError(f"item metadata has {values.size} rows for {size} items")
    return values


@torch.no_grad()
def _exposure_factors(model: Recommender) -> tuple[np.ndarray, np.ndarray] | None:
    """The dual model's exposure embeddings (users, items): σ(u·v) is the exposure
    probability of the pair; ``None`` for models without an exposure tower."""
    if not isinstance(model, DualModel):
        return None
    users, items = model.module.exposure()
    return users.detach().cpu().numpy().astype(np.float64), items.detach().cpu().numpy().astype(np.float64)


def build_recommender(
    dataset: str,
    model: Recommender,
    id_maps: pd.DataFrame,
    item_metadata: pd.DataFrame,
    train_matrix: sp.csr_matrix,
) -> TrainedRecommender:
    """A ``TrainedRecommender`` from the data-processing artifacts of the same run."""
    users = id_maps[id_maps["entity"] == "user"].sort_values("index")["original_id"].to_numpy()
    items = id_maps[id_maps["entity"] == "item"].sort_values("index")["original_id"].to_numpy()
    return TrainedRecommender(dataset, model, users, items, item_metadata.sort_values("index"), train_matrix)


def load_recommender(uri: str | Path, device: torch.device | str = "cpu") -> TrainedRecommender:
    """A trained recommender from an MLflow model URI (``models:/movielens_100k-lightgcn/1``,
    ``runs:/<run id>/model``, ``models:/<model id>``) or a local ``recommender.pkl``
    (a file, or its versioned folder: the newest version inside).

    Raises:
        FileNotFoundError: For a local path with no recommender in it.
    """
    text = str(uri)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow

        return mlflow.pyfunc.load_model(text).unwrap_python_model().recommender
    path = Path(text)
    if path.is_dir():
        versions = sorted(p for p in path.glob(f"*/{path.name}") if p.is_file())
        if not versions:
            raise FileNotFoundError(f"no version of {path.name} under {path}")
        path = versions[-1]
    if not path.is_file():
        raise FileNotFoundError(f"no trained recommender at {path}")
    with path.open("rb") as handle:
        return TrainedRecommender.from_package(pickle.load(handle), device)


FILE = "recommender.pkl"  # a versioned recommender: <model>/<dataset>/recommender.pkl/<version>/recommender.pkl


class TrainedRecommenders:
    """The ``<model>.recommender`` artifacts under ``root``: ``root/<model>/<dataset>/
    recommender.pkl/<version>/recommender.pkl``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, model: str, dataset: str, version: str | None = None) -> Path:
        """The file of ``version`` (default: the newest) of ``model`` trained on ``dataset``.

        Raises:
            FileNotFoundError: Naming the pipeline that trains one, or the versions there are.
        """
        folder = self.root / model / dataset / FILE
        versions = sorted(p.parent.name for p in folder.glob(f"*/{FILE}") if p.is_file())
        if not versions:
            raise FileNotFoundError(
                f"no trained {model!r} for dataset {dataset!r} under {folder}; run "
                f"`kedro run --pipelines=train_{model} --params=dataset={dataset}` first"
            )
        if version is None:
            return folder / versions[-1] / FILE
        if version not in versions:
            raise FileNotFoundError(
                f"no version {version!r} of {model!r} for {dataset!r}; versions: {', '.join(versions)}"
            )
        return folder / version / FILE

    def load(self, model: str, dataset: str, version: str | None = None) -> TrainedRecommender:
        return load_recommender(self.path(model, dataset, version))
