"""Project settings: the context, the config loader and the project's own hooks.

kedro-mlflow registers its hook through its plugin entry point.

Every `kedro` command imports this module (`kedro --version` included), so it and the
hooks' modules import no heavy library at the top: each hook imports MLflow, torch or
the models when it runs (docs/performance.md, "Start-up").
"""

import os

from debias_pipeline.config.loader import DatasetDefaultsConfigLoader
from debias_pipeline.framework.context import ProjectContext
from debias_pipeline.framework.journal import PinOwnVersionsHook, RunJournalHook
from debias_pipeline.framework.library_warnings import ignore_library_warnings
from debias_pipeline.framework.mlflow_hooks import (
    MlflowArtifactHook,
    MlflowRunLabelHook,
    MlflowStoreLockHook,
    PlainParametersForMlflowHook,
)
from debias_pipeline.framework.progress import ProgressHook
from debias_pipeline.framework.runs import use_unique_session_ids
from debias_pipeline.framework.validation import RefuseParallelRunnerHook, ValidateParametersHook

# Two runs started in the same millisecond get distinct session ids (save versions).
use_unique_session_ids()

# Warnings of Kedro, kedro-mlflow and MLflow that every run would print and the project
# cannot act on (each with its reason in framework/library_warnings.py).
ignore_library_warnings()

# MLflow's start_run looks for a Databricks job to resume by importing IPython (installed
# here for the notebook), a quarter of a second of every run's start; there is no
# Databricks job to resume.
os.environ.setdefault("MLFLOW_ENABLE_SGC_RUN_RESUMPTION_FOR_DATABRICKS_JOBS", "false")

HOOKS = (
    ValidateParametersHook(),
    RefuseParallelRunnerHook(),
    PinOwnVersionsHook(),
    MlflowStoreLockHook(),
    MlflowArtifactHook(),
    MlflowRunLabelHook(),
    PlainParametersForMlflowHook(),
    RunJournalHook(),
    ProgressHook(),
)

CONTEXT_CLASS = ProjectContext

CONFIG_LOADER_CLASS = DatasetDefaultsConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}
