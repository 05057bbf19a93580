"""Project settings: the context, the config loader and the project's own hooks.

kedro-mlflow registers its hook through its plugin entry point.
"""

from debias_pipeline.config.loader import DatasetDefaultsConfigLoader
from debias_pipeline.framework.context import ProjectContext
from debias_pipeline.framework.journal import PinOwnVersionsHook, RunJournalHook
from debias_pipeline.framework.mlflow_hooks import (
    MlflowArtifactHook,
    MlflowRunLabelHook,
    MlflowStoreLockHook,
    PlainParametersForMlflowHook,
)
from debias_pipeline.framework.runs import use_unique_session_ids
from debias_pipeline.framework.validation import RefuseParallelRunnerHook, ValidateParametersHook

# Two runs started in the same millisecond get distinct session ids (save versions).
use_unique_session_ids()

HOOKS = (
    ValidateParametersHook(),
    RefuseParallelRunnerHook(),
    PinOwnVersionsHook(),
    MlflowStoreLockHook(),
    MlflowArtifactHook(),
    MlflowRunLabelHook(),
    PlainParametersForMlflowHook(),
    RunJournalHook(),
)

CONTEXT_CLASS = ProjectContext

CONFIG_LOADER_CLASS = DatasetDefaultsConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}
