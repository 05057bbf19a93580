"""Project settings: the context, the config loader and the project's own hooks.

kedro-mlflow registers its hook through its plugin entry point.
"""

from debias_pipeline.config_loader import DatasetDefaultsConfigLoader
from debias_pipeline.context import ProjectContext
from debias_pipeline.hooks import (
    MlflowArtifactHook,
    MlflowRunLabelHook,
    MlflowStoreLockHook,
    PinOwnVersionsHook,
    PlainParametersForMlflowHook,
    RefuseParallelRunnerHook,
    RunJournalHook,
    ValidateParametersHook,
)
from debias_pipeline.runs import use_unique_session_ids

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
