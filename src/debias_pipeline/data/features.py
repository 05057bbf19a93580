"""Side data as numeric feature matrices aligned with the 0-based ids, for models that
take node features (``TrainData.user_features`` / ``item_features``).

- A ``genres`` column ("Action|Comedy") becomes one 0/1 column per genre.
- A column named ``age`` becomes MovieLens-1M's age buckets (under 18, 18-24, 25-34,
  35-44, 45-49, 50-55, 56 and over), one-hot.
- Any other numeric column is standardized (mean 0, std 1; missing values 0).
- Any other text column with at most ``MAX_CATEGORIES`` distinct values is one-hot;
  free text (titles, zip codes, URLs) is left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # lower bounds of the buckets after "under 18"
MAX_CATEGORIES = 50
ID_COLUMNS = ("index", "original_id")
FREE_TEXT = ("title", "name", "zip", "url", "release_date")


def _one_hot(values: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(values.astype(str), sort=True)
    encoded = np.zeros((len(values), len(uniques)), dtype=np.float32)
    encoded[np.arange(len(values)), codes] = 1.0
    return encoded


def _encode(table: pd.DataFrame) -> np.ndarray | None:
    blocks: list[np.ndarray] = []
    for column in table.columns:
        if column in ID_COLUMNS or column in FREE_TEXT:
            continue
        values = table[column]
        if column == "genres":
            genres = values.fillna("").astype(str).str.get_dummies(sep="|").drop(columns="", errors="ignore")
            if genres.shape[1]:
                blocks.append(genres.to_numpy(np.float32))
        elif column == "age" and pd.api.types.is_numeric_dtype(values):
            buckets = np.searchsorted(np.array(AGE_BUCKETS), values.fillna(0).to_numpy(), side="right")
            encoded = np.zeros((len(values), len(AGE_BUCKETS) + 1), dtype=np.float32)
            encoded[np.arange(len(values)), buckets] = 1.0
            blocks.append(encoded)
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(np.float64)
            finite = np.isfinite(numbers)
            if not finite.any():
                continue
            mean, std = numbers[finite].mean(), numbers[finite].std()
            standardized = np.where(finite, (numbers - mean) / (std if std > 0 else 1.0), 0.0)
            blocks.append(standardized.astype(np.float32)[:, None])
        elif values.astype(str).nunique() <= MAX_CATEGORIES:
            blocks.append(_one_hot(values.fillna("")))
    if not blocks:
        return None
    return np.concatenate(blocks, axis=1)


def encode_user_features(user_features: pd.DataFrame) -> np.ndarray | None:
    """(n_users, f) float32 features of the users, or None when the dataset has none."""
    return _encode(user_features)


def encode_item_features(item_metadata: pd.DataFrame) -> np.ndarray | None:
    """(n_items, f) float32 features of the items (genres multi-hot, numeric columns
    standardized, small categorical columns one-hot), or None when there are none."""
    return _encode(item_metadata)
