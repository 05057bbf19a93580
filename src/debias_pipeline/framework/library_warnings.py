"""Library warnings that every run would print and that the project cannot act on.

Each is ignored by its message and the module that issues it, so that the same text
from elsewhere still shows; the reason goes with it (docs/operations.md lists them).
A warning the project can act on is not listed here: it is fixed where it comes from.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnoredWarning:
    """One ignored warning: ``message`` and ``module`` are regular expressions matched
    at the start of the warning's text and of the issuing module's name."""

    message: str
    module: str
    reason: str
    category: type[Warning] = UserWarning

    def matches(self, message: str, category: type[Warning], module: str) -> bool:
        return (
            issubclass(category, self.category)
            and re.compile(self.message, re.IGNORECASE).match(message) is not None
            and re.compile(self.module).match(module) is not None
        )


IGNORED = (
    IgnoredWarning(
        message=r"register_new_resolver\(\) is deprecated",
        module=r"kedro\.config\.omegaconf_config|kedro_mlflow\.",
        reason="Kedro's config loader and kedro-mlflow register their resolvers with OmegaConf's old call "
        "(three times a run); the project registers none.",
    ),
    IgnoredWarning(
        message=r".*Add type hints to the `predict` method",
        module=r"mlflow\.pyfunc\.utils\.data_validation",
        reason="kedro-mlflow's KedroPipelineModel has an untyped predict; MLflow checks it when kedro-mlflow's "
        "command line is loaded, for every `kedro` command. The project's own model (serving/server.py) is typed.",
    ),
    IgnoredWarning(
        message=r"One or more dataset names contain '\.' characters",
        module=r"kedro\.pipeline\.node",
        reason="NeuMF's pipeline starts from gmf.model_weights and mlp.model_weights: outputs of the GMF and "
        "MLP namespaces, named with a dot by Kedro's own namespacing, which Kedro warns about when a "
        "namespace reads another's.",
    ),
    IgnoredWarning(
        message=r"The specified dataset source can be interpreted in multiple ways: "
        r"LocalArtifactDatasetSource, LocalArtifactDatasetSource",
        module=r"mlflow\.data\.dataset_source_registry",
        reason="MLflow registers its local-file dataset source twice (for paths and for file:// URIs), so the "
        "run's dataset input (the raw data folder) matches both; the two are the same.",
    ),
    IgnoredWarning(
        message=r"Hint: Inferred schema contains integer column\(s\)",
        module=r"mlflow\.types\.utils",
        reason="The run's dataset input (the ratings) has integer user and item ids, which are never missing; "
        "the hint is about model inputs whose missing integers MLflow would read as floats.",
    ),
)


# What logging.captureWarnings logs for a warning: warnings.formatwarning's text.
_FORMATTED = re.compile(r"(?P<filename>.+?):(?P<lineno>\d+): (?P<category>\w+): (?P<message>.*)", re.DOTALL)


def _module_name(filename: str) -> str:
    """The name of the imported module whose file is ``filename`` (else ``filename``)."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return filename


class IgnoredWarningsFilter(logging.Filter):
    """Drop the ``py.warnings`` records (warnings that Kedro's logging captures) of an
    ignored warning. MLflow issues some of its warnings under its own filter
    (``simplefilter("once")`` around the call), which takes precedence over
    ``warnings.filterwarnings``: those reach the log, and stop here."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _FORMATTED.match(record.getMessage())
        if found is None:
            return True
        category = {ignored.category.__name__: ignored.category for ignored in IGNORED}.get(found["category"])
        if category is None:
            return True
        module = _module_name(found["filename"])
        return not any(ignored.matches(found["message"], category, module) for ignored in IGNORED)


def ignore_library_warnings() -> None:
    """Ignore every warning of ``IGNORED`` in this process: a filter of ``warnings``,
    and one on the ``py.warnings`` logger for those issued under a library's own filter."""
    for ignored in IGNORED:
        warnings.filterwarnings("ignore", message=ignored.message, category=ignored.category, module=ignored.module)
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(f, IgnoredWarningsFilter) for f in captured.filters):
        captured.addFilter(IgnoredWarningsFilter())
