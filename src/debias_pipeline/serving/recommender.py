"""Top-N recommendations in the dataset's own ids, with titles and genres.

A ``TrainedRecommender`` is a fitted model plus what it takes to answer in original
ids: the id maps, the item metadata, the train positives (excluded by default, and the
popularity fallback). Training pipelines save one per (dataset, model) as the versioned
``<model>.recommender`` and log it to MLflow as a pyfunc model
(``debias_pipeline.serving.server``); ``load_recommender`` reads either back.

The arguments of the public methods are checked: a list of ids is a list (a string is
refused, not read as its characters), a flag is a bool; a wrong one raises a
``TypeError`` naming the argument. Ids a message echoes are written as ``repr`` does,
so control characters arrive escaped.
"""

from __future__ import annotations

import importlib
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


class UnreadableRecommenderError(ValueError):
    """A saved recommender that cannot be loaded (a truncated or damaged file, or one
    that names classes the package no longer has); the message names the file and
    version and what to do."""


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


def _id_list(values: Any, argument: str, what: str) -> list[Any]:
    """``values`` as a list, refusing what only looks iterable: a string would be read as
    its characters (``score(u, "12")`` as items "1" and "2")."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{argument} must be a list of {what} ids, not the string {values!r}; for one {what}: [{values!r}]")
    if values is None or not isinstance(values, Iterable):
        raise TypeError(f"{argument} must be a list of {what} ids, got {values!r}")
    return list(values)


def _flag(value: Any, argument: str) -> bool:
    """A bool, never a truthy stand-in (``"no"`` is a true value)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument} must be True or False, got {value!r}")
    return bool(value)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RecommendationError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _listed(ids: Iterable[str]) -> str:
    return ", ".join(repr(str(value)) for value in ids)


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
                f"({_listed(self.user_ids[:3])}, ...); give the user's history to fold them in"
            )
        return self._user_index[key]

    def item_index(self, items: Iterable[Any], argument: str = "items") -> np.ndarray:
        indices = []
        for item in _id_list(items, argument, "item"):
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
        include_genres: Iterable[str] | str = (),
        exclude_genres: Iterable[str] | str = (),
    ) -> pd.DataFrame:
        """The ``k`` best items for ``user`` (original id): one row per rank with ``item``,
        ``title``, ``genres``, ``score`` (and ``exposure``, σ(ô), for the dual model).

        Ties are broken by the item's position in the dataset's id map. Train items are
        left out unless ``exclude_train`` is false; ``include_genres`` keeps items with
        at least one of them, ``exclude_genres`` drops items with any of them (a string
        is one genre).

        Raises:
            RecommendationError: An unknown user or genre, ``k`` not a positive integer.
            TypeError: ``exclude_train`` not a bool, genres neither a string nor a list.
        """
        return self.recommend_many(
            [user], k, exclude_train=exclude_train, include_genres=include_genres, exclude_genres=exclude_genres
        )

    def recommend_many(
        self,
        users: Iterable[Any],
        k: int = 10,
        *,
        exclude_train: bool = True,
        include_genres: Iterable[str] | str = (),
        exclude_genres: Iterable[str] | str = (),
    ) -> pd.DataFrame:
        """``recommend`` for each of ``users`` (a list of ids), one table; no users give
        an empty table with the same columns."""
        users, k = _id_list(users, "users", "user"), _check_k(k)
        exclude_train = _flag(exclude_train, "exclude_train")
        allowed = self._allowed(include_genres, exclude_genres)  # once for all the users
        columns = ["user", "rank", "item", "title", "genres", "score", *(["exposure"] if self._exposure is not None else []), "source"]
        tables = []
        for user in users:
            index = self.user_index(user)
            scores = self.model.score(np.array([index]))[0].astype(np.float64)
            seen = self.train[index].indices if exclude_train else np.array([], dtype=np.int64)
            table = self._top(scores, k, seen, allowed)
            if self._exposure is not None:
                exposure_users, exposure_items = self._exposure
                logits = exposure_items[table["index"].to_numpy()] @ exposure_users[index]
                table["exposure"] = 1.0 / (1.0 + np.exp(-logits))
            tables.append(table.assign(user=self.user_ids[index], source="model")[columns])
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)

    def recommend_history(
        self,
        history: Iterable[Any],
        k: int = 10,
        *,
        include_genres: Iterable[str] | str = (),
        exclude_genres: Iterable[str] | str = (),
    ) -> pd.DataFrame:
        """Top ``k`` for a user the model was not trained on, from the items they clicked
        (a list of original ids, left out of the answer). A model that folds users in
        (WMF) scores them; any other answers with the items' train popularity (``source``
        says which)."""
        clicked, k = np.unique(self.item_index(history, "history")), _check_k(k)
        allowed = self._allowed(include_genres, exclude_genres)
        if self.model.supports_fold_in:
            row = sp.csr_matrix((np.ones(clicked.size), (np.zeros(clicked.size, dtype=np.int64), clicked)), shape=(1, self.item_ids.size))
            scores, source = self.model.fold_in(row)[0].astype(np.float64), "fold_in"
        else:
            scores, source = self.popularity.copy(), "popularity"
        table = self._top(scores, k, clicked, allowed).drop(columns="index")
        return table.assign(user=None, source=source)[["user", "rank", "item", "title", "genres", "score", "source"]]

    def _allowed(self, include_genres: Iterable[str] | str, exclude_genres: Iterable[str] | str) -> np.ndarray:
        """(n_items,) bool: the items the genre filters keep."""
        return self._genre_mask(include_genres, "include_genres", keep=True) & self._genre_mask(
            exclude_genres, "exclude_genres", keep=False
        )

    def _top(self, scores: np.ndarray, k: int, excluded: np.ndarray, allowed: np.ndarray) -> pd.DataFrame:
        allowed = allowed.copy()
        allowed[excluded] = False
        candidates = np.flatnonzero(allowed)
        order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
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

    def _genre_mask(self, genres: Iterable[str] | str, argument: str, *, keep: bool) -> np.ndarray:
        if genres is None or not isinstance(genres, (str, Iterable)):
            raise TypeError(f"{argument} must be a genre or a list of genres, got {genres!r}")
        wanted = {str(g) for g in ([genres] if isinstance(genres, str) else genres)}
        if not wanted:
            return np.ones(self.item_ids.size, dtype=bool)
        unknown = sorted(wanted - self._known_genres)
        if unknown:
            raise RecommendationError(
                f"unknown genre(s) {unknown}; {self.dataset} has: {_listed(sorted(self._known_genres)) or 'no genres'}"
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
        UnreadableRecommenderError: For a file that cannot be loaded, naming it and its
            version; the newest version broken is an error, never a reason to load an
            older one instead.
    """
    text = str(uri)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow

        return mlflow.pyfunc.load_model(text).unwrap_python_model().recommender
    path = Path(text)
    if not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"no trained recommender at {path}")
        return _read(path, device)
    versions = sorted(p.parent.name for p in path.glob(f"*/{path.name}") if p.is_file())
    if not versions:
        raise FileNotFoundError(f"no version of {path.name} under {path}")
    return _read(path / versions[-1] / path.name, device, versions, pin=f"load_recommender('{path}/<version>/{path.name}')")


FILE = "recommender.pkl"  # a versioned recommender: <model>/<dataset>/recommender.pkl/<version>/recommender.pkl

# Where the names an artifact saved before the package restructure refers to live now
# (old module -> the modules its contents went to, searched in order). The restructure
# moved code without changing it, so an old name resolves to the very same class and an
# old artifact loads as it was: no retraining for a rename.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "debias_pipeline.recommend": ("debias_pipeline.serving.recommender",),
    "debias_pipeline.serving": ("debias_pipeline.serving.server",),
    "debias_pipeline.models.base": (
        "debias_pipeline.models.contract",
        "debias_pipeline.models.configs",
        "debias_pipeline.models.trainers",
    ),
    "debias_pipeline.config": ("debias_pipeline.config.params",),
    "debias_pipeline.config_loader": ("debias_pipeline.config.loader",),
    "debias_pipeline.selection": ("debias_pipeline.models.early_stopping",),
    "debias_pipeline.metrics": ("debias_pipeline.evaluation.metrics",),
    "debias_pipeline.protocols": (
        "debias_pipeline.evaluation.protocols",
        "debias_pipeline.evaluation.splits",
        "debias_pipeline.evaluation.evaluators",
    ),
    "debias_pipeline.cold_start": ("debias_pipeline.evaluation.cold_start",),
    "debias_pipeline.truth": ("debias_pipeline.evaluation.truth",),
    "debias_pipeline.features": ("debias_pipeline.data.features",),
    "debias_pipeline.simulation": ("debias_pipeline.data.simulation",),
    "debias_pipeline.datasets.registry": ("debias_pipeline.data.registry",),
    "debias_pipeline.device": ("debias_pipeline.training.device",),
    "debias_pipeline.tracking": ("debias_pipeline.training.tracking",),
}


class _MissingName(Exception):
    """A class the pickle refers to that neither its module nor ``MOVED_MODULES`` has."""


class _Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that looks an old module's names up where they moved."""

    def find_class(self, module: str, name: str) -> Any:
        for moved_to in MOVED_MODULES.get(module, ()):
            found = getattr(importlib.import_module(moved_to), name, None)
            if found is not None:
                return found
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            raise _MissingName(f"{module}.{name}") from None


def _read(
    path: Path, device: torch.device | str, versions: Sequence[str] = (), *, pin: str = ""
) -> TrainedRecommender:
    """The recommender saved at ``path``: a ``package()`` (or, from older code, a whole
    ``TrainedRecommender``). ``versions``: all the versions, when ``path`` is the newest
    chosen among them (the message then says how to ``pin`` another: ``<version>``
    stands for it)."""
    versioned = path.parent.parent.name == path.name  # <name>/<version>/<name>
    described = f"the trained recommender {path}" + (f" (version {path.parent.name!r})" if versioned else "")
    ours = versioned and path.name == FILE and len(path.parents) > 3  # <model>/<dataset>/recommender.pkl/...
    model, dataset = (path.parents[3].name, path.parents[2].name) if ours else ("<model>", "")
    retrain = f"retrain with `kedro run --pipelines=train_{model}" + (f" --params=dataset={dataset}`" if dataset else "`")
    if len(versions) > 1:
        older = ", ".join(versions[:-1])
        retrain += (
            f"; it is the newest of {len(versions)} versions and none older is loaded in its place: "
            f"pin one with {pin.replace('<version>', versions[-2])} (older versions: {older})"
        )
    try:
        with path.open("rb") as handle:
            content = _Unpickler(handle).load()
    except _MissingName as missing:
        where = "an older layout of the package" if str(missing).startswith("debias_pipeline.") else "other library versions"
        raise UnreadableRecommenderError(
            f"{described} was saved by {where}: it refers to {missing}, which is not here; {retrain}"
        ) from None
    except Exception as error:  # a cut or damaged pickle fails in many ways (UnpicklingError, EOFError, ...)
        raise UnreadableRecommenderError(
            f"{described} cannot be read: the file is truncated or damaged ({type(error).__name__}: {error}); {retrain}"
        ) from error
    if isinstance(content, TrainedRecommender):
        return content
    if not isinstance(content, dict) or not {"state", "train", "user_ids", "item_ids"} <= content.keys():
        raise UnreadableRecommenderError(f"{described} holds a {type(content).__name__}, not a trained recommender; {retrain}")
    return TrainedRecommender.from_package(content, device)


class TrainedRecommenders:
    """The ``<model>.recommender`` artifacts under ``root``: ``root/<model>/<dataset>/
    recommender.pkl/<version>/recommender.pkl``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self, model: str, dataset: str) -> list[str]:
        """The saved versions of ``model`` trained on ``dataset``, oldest first."""
        folder = self.root / model / dataset / FILE
        return sorted(p.parent.name for p in folder.glob(f"*/{FILE}") if p.is_file())

    def path(self, model: str, dataset: str, version: str | None = None) -> Path:
        """The file of ``version`` (default: the newest) of ``model`` trained on ``dataset``.

        Raises:
            FileNotFoundError: Naming the pipeline that trains one, or the versions there are.
        """
        folder = self.root / model / dataset / FILE
        versions = self.versions(model, dataset)
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
        """``version`` (default: the newest) of ``model`` trained on ``dataset``.

        Raises:
            FileNotFoundError: See ``path``.
            UnreadableRecommenderError: The version cannot be loaded (the newest broken
                is not replaced by an older one: the message says how to pin one).
        """
        path = self.path(model, dataset, version)
        versions = self.versions(model, dataset) if version is None else ()
        return _read(path, "cpu", versions, pin="--params=recommend.version=<version>")
