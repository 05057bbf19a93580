"""Project pipelines.

``data_processing`` builds the shared inputs; every model of ``MODEL_NAMESPACES`` gets
the same training + evaluation template under its own namespace, its hyperparameters
in the block ``<namespace>.model`` of ``conf/base/parameters_training.yml``:

- ``train_<namespace>``: data processing, then that model (``train_neumf``: GMF and MLP
  first, whose fitted weights a pretrained NeuMF starts from);
- ``train_baselines``: data processing, then every baseline (every model but dual,
  those that need social ties or an unbiased sample, and ``best``);
- ``train_best``: the configuration chosen on validation as the best on Coat (the block
  ``best.model`` of ``conf/base/parameters_best.yml``);
- ``recommend``: the top-N of a trained model for named users (no training);
- ``reproduce_thesis``: the study's tables over several seeds (its own package);
- ``study_hypotheses``: the study's hypotheses on simulated worlds, against the truth;
- ``tune``: an Optuna study of one model block on the validation metric (``tuning``);
- ``__default__``: data processing, then every model but those that need social ties
  or an unbiased sample, and ``best``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from debias_pipeline.pipelines.data_processing import pipeline as data_processing
from debias_pipeline.pipelines.evaluation import pipeline as evaluation
from debias_pipeline.pipelines.propensity import pipeline as propensity
from debias_pipeline.pipelines.recommend import pipeline as recommend
from debias_pipeline.pipelines.reproduce_thesis import pipeline as reproduce_thesis
from debias_pipeline.pipelines.study_hypotheses import pipeline as study_hypotheses
from debias_pipeline.pipelines.training import pipeline as training
from debias_pipeline.pipelines.tune import pipeline as tune

MODEL_NAMESPACES = (
    "mf",
    "lightgcn",
    "dual",
    "dual_prior",
    "dual_supervised",
    "dual_popconstraint",
    "mostpop",
    "itemknn",
    "ease",
    "ngcf",
    "wmf",
    "expomf",
    "relmf",
    "mf_ips",
    "dr_jl",
    "cause",
    "recrec_f",
    "recrec_i",
    "gmf",
    "mlp",
    "neumf",
    "multvae",
    "multdae",
    "gcn",
    "gat",
    "graphsage",
    "pinsage",
    "socialgcn",
    "pda",
    "macr",
    "dice",
    "best",
)
# The configuration chosen on validation as the best on Coat (conf/base/parameters_best.yml):
# it repeats one of the models above, so only in its own train_best.
CHOSEN_NAMESPACES = ("best",)
METHOD_NAMESPACES = ("dual",)  # the study's method; every other model is a baseline
# The dual model with an identifying device (conf/base/parameters_debias.yml,
# docs/debiasing.md, "The dual model against the truth"): variants of the method, each only
# in its own train_<namespace> (dual_supervised also needs the unbiased sample).
VARIANT_NAMESPACES = ("dual_prior", "dual_supervised", "dual_popconstraint")
# Models that need data most datasets lack (social ties; CausE's unbiased labelled
# sample, which only the thesis protocol's datasets have): only in their own
# train_<namespace>, not in train_baselines or __default__.
SIDE_DATA_NAMESPACES = ("socialgcn", "cause")
# Models whose training starts from other models' fitted weights (NeuMF's pretraining,
# ``neumf.model.pretrain``): their pipelines train those models first, in the same run.
PRETRAINED_FROM = {"neumf": ("gmf", "mlp")}


def model_pipeline(namespace: str) -> Pipeline:
    """Train and evaluate the model of parameter block ``<namespace>.model``."""
    pretrained = PRETRAINED_FROM.get(namespace, ())
    template = training.create_pipeline(namespace, pretrained) + evaluation.create_pipeline()
    return Pipeline(
        template,
        namespace=namespace,
        # every model trains on the train data with the run's propensity estimate attached
        inputs={name: name for name in training.SHARED_INPUTS} | {"train_data": "weighted_train_data"}
        | {training.pretrained_input(name): f"{name}.model_weights" for name in pretrained},
        parameters=training.SHARED_PARAMETERS,
    )


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines."""
    shared = data_processing.create_pipeline() + training.create_device_pipeline() + propensity.create_pipeline()
    models = {namespace: model_pipeline(namespace) for namespace in MODEL_NAMESPACES}
    pipelines: dict[str, Pipeline] = {
        "data_processing": data_processing.create_pipeline(),
        "estimate_propensities": shared,
    }
    for namespace, pipeline in models.items():
        upstream = sum((models[name] for name in PRETRAINED_FROM.get(namespace, ())), Pipeline([]))
        pipelines[f"train_{namespace}"] = shared + upstream + pipeline
    general = {
        namespace: pipeline
        for namespace, pipeline in models.items()
        if namespace not in SIDE_DATA_NAMESPACES + CHOSEN_NAMESPACES + VARIANT_NAMESPACES
    }
    baselines = [pipeline for namespace, pipeline in general.items() if namespace not in METHOD_NAMESPACES]
    pipelines["train_baselines"] = shared + sum(baselines, Pipeline([]))
    pipelines["recommend"] = recommend.create_pipeline()
    pipelines["reproduce_thesis"] = shared + reproduce_thesis.create_pipeline()
    pipelines["study_hypotheses"] = training.create_device_pipeline() + study_hypotheses.create_pipeline()
    pipelines["tune"] = shared + tune.create_pipeline()
    pipelines["__default__"] = shared + sum(general.values(), Pipeline([]))
    return pipelines
