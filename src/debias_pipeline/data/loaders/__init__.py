"""Parsers of the raw dataset formats, one per dataset, all returning a :class:`RawData`.

A parser only reads its files and checks their syntax: every field count, number and
id is validated, and a malformed row fails with ``"<path> line <n>: <what is wrong>"``
(:class:`RawDataError`). What to do with the data (binarising ratings, k-core
filtering, mapping ids to 0..n-1, splitting) is left to the preprocessing, so the
values are kept as the files give them: original ids, ratings such as Anime's ``-1``,
users without items.

Formats (``directory`` is ``data/01_raw/<dataset>/``):

- ``coat``: ``train.ascii`` (biased), ``test.ascii`` (unbiased), dense 290 x 300 matrices.
- ``yahoo_r3``: ``ydata-ymusic-rating-study-v1_0-{train,test}.txt``, ``user item rating``.
- ``gowalla``: ``train.txt``, ``test.txt``, one ``user item item ...`` line per user.
- ``lastfm``: ``data1.txt``, ``test1.txt`` (``user artist count``), ``trustnetwork.txt``.
- ``movielens_100k``: ``u.data``, ``u.item``, ``u.user`` and, when present, ``u.genre``.
- ``movielens_1m``: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``-separated).
- ``anime``: ``anime.csv`` and ``rating.csv`` (the Kaggle "Anime Recommendations" set).
- ``custom``: CSV/TSV/Parquet files and column names given by the ``custom`` parameters.

Big files are read with pandas' C parser in chunks of :data:`CHUNK_ROWS` rows, every
field as a string, and validated with vectorised regular expressions before being
cast by pyarrow, so ids never pass through floating point. Each chunk is typed at
once and written into the columns of the result (``interactions.Interactions``), so
memory stays bounded by one chunk of text plus the typed result, for the custom files
as for the fixed formats (docs/datasets.md, "Memory"). Line numbers are the true 1-based lines
of the file (blank lines are skipped but counted); a quoted CSV field spanning several
lines would shift them, which none of the fixed formats has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from debias_pipeline.data.loaders.custom import load_custom
from debias_pipeline.data.loaders.formats import load_coat, load_gowalla, load_lastfm, load_yahoo_r3
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.data.loaders.side_data import load_anime, load_movielens_1m, load_movielens_100k

# The parser of each dataset (``data.registry`` names each dataset's loader).
LOADERS: dict[str, Callable[[Path, Mapping[str, Any] | None], RawData]] = {
    "coat": load_coat,
    "yahoo_r3": load_yahoo_r3,
    "gowalla": load_gowalla,
    "lastfm": load_lastfm,
    "movielens_100k": load_movielens_100k,
    "movielens_1m": load_movielens_1m,
    "anime": load_anime,
    "custom": load_custom,
}
