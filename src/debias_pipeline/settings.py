"""Project settings: the config loader and the project's own hooks.

kedro-mlflow registers its hook through its plugin entry point.
"""

from kedro.config import OmegaConfigLoader

from debias_pipeline.hooks import (
    MlflowArtifactHook,
    MlflowStoreLockHook,
    RefuseParallelRunnerHook,
    RunJournalHook,
    ValidateParametersHook,
)

HOOKS = (
    ValidateParametersHook(),
    RefuseParallelRunnerHook(),
    MlflowStoreLockHook(),
    MlflowArtifactHook(),
    RunJournalHook(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}
