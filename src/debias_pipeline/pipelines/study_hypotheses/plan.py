"""The study's hypotheses against the simulator's truth: the plan of every fit.

A *world* is one draw of the simulator (``study_hypotheses.world``, a ``synthetic``
block: a preset plus overrides) at one exposure-bias strength and one seed; the seed
also sets the unbiased split and every initialization, so fits with the same seed are
paired. Sweeps, each over ``study_hypotheses.seeds``:

- ``models``: every block of ``study_hypotheses.models`` on the default world;
- ``exposure_rank``: the dual model's exposure embedding size;
- ``exposure_layers``: the dual model's exposure LightGCN layers;
- ``spectra``: MF, the dual model and the dual model with the eigen penalty;
- ``bias_strength``: MF, the dual model and the other blocks of
  ``sweeps.bias_strength_models`` (the dual model with its exposure prior, say) as the
  exposure-bias strength grows;
- ``methods``: every block named in ``sweeps.methods`` (each debiasing method and
  baseline) at each strength of ``sweeps.methods_bias_strength``;
- ``offpolicy``: the estimators of protocol ``ips`` against the true metric, for the
  blocks of ``sweeps.methods`` that need no unbiased sample (module ``offpolicy``; its
  worlds are split by that protocol, so its fits are its own).

``sweeps.only`` runs a subset of the sweeps (``[methods]``: the methods table alone).

The stages, one module each: ``plan`` (this one), ``worlds`` (simulate and process),
``fits`` (every distinct fit once, on Dask workers, measured by the thesis protocol and
against the truth), ``statistics`` (means, gains over MF, paired tests), ``figures``
and ``report``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from debias_pipeline.config.params import Params, as_mapping, build_config, parse_seeds, require
from debias_pipeline.data.simulation import SyntheticConfig
from debias_pipeline.models.registry import model_block

logger = logging.getLogger(__name__)

REFERENCE = "mf"  # every gain is measured against this block of study_hypotheses.models
DUAL = "dual"
SWEEPS = ("models", "exposure_rank", "exposure_layers", "spectra", "bias_strength", "methods")
OFFPOLICY = "offpolicy"  # the sweep of the off-policy estimators, on worlds of protocol ips
KEYS = ["sweep", "setting", "model", "bias_strength"]  # one summary line; the seeds vary within it
WHERE = "study_hypotheses"


class TruthConfig(Params):
    """How fits are measured against the truth.

    Attributes:
        top_n: size of each user's relevant set: the ``top_n`` items of highest true
            preference among those without a train positive.
        max_pairs: recovery metrics use all pairs up to this many, else a seeded
            sample of this many.
    """

    top_n: int = 10
    max_pairs: int = 1_000_000

    def check(self) -> None:
        require(self.top_n >= 1, f"top_n must be >= 1, got {self.top_n}")
        require(self.max_pairs >= 2, f"max_pairs must be >= 2, got {self.max_pairs}")


class SweepsConfig(Params):
    """The grids of the hypotheses (each fit is repeated over the seeds).

    Attributes:
        exposure_rank: exposure embedding sizes of the dual model.
        exposure_layers: LightGCN layer counts of the dual model's exposure tower.
        eigen: the dual model's ``eigen`` block for the spectra sweep (form f1, f2 or power).
        bias_strength: exposure-bias strengths β of the world (0 = random exposure).
        bias_strength_models: the blocks of ``study_hypotheses.models`` fitted at every
            β: MF (the reference of the gains) and any others, in report order.
        methods: the blocks of ``study_hypotheses.models`` of the methods table (and of
            the off-policy sweep), MF first: a block added to ``models`` and named here
            is all a new method needs.
        methods_bias_strength: the strengths β of the methods table and of the
            off-policy sweep.
        only: the sweeps to run (names of ``SWEEPS`` and ``offpolicy``); empty: all.
            This, ``methods`` and ``bias_strength_models`` also take a string of names
            separated by spaces, as the command line passes them
            (``--params="study_hypotheses.sweeps.only=methods offpolicy"``: Kedro splits
            ``--params`` at commas).
    """

    exposure_rank: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 200)
    exposure_layers: tuple[int, ...] = (0, 1, 2, 3)
    eigen: dict[str, Any] = Field(
        default_factory=lambda: {"form": "f2", "k": 6, "lambda_preference": 0.0, "lambda_exposure": -1e-5}
    )
    bias_strength: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    bias_strength_models: tuple[str, ...] = (REFERENCE, DUAL)
    methods: tuple[str, ...] = (REFERENCE, DUAL)
    methods_bias_strength: tuple[float, ...] = (0.0, 1.0, 2.0)
    only: tuple[str, ...] = ()

    @field_validator("only", "methods", "bias_strength_models", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return tuple(value.split()) if isinstance(value, str) else value

    def runs(self, sweep: str) -> bool:
        """Whether ``sweep`` is among the sweeps this run makes."""
        return not self.only or sweep in self.only

    def check(self) -> None:
        names = ("exposure_rank", "exposure_layers", "bias_strength", "bias_strength_models", "methods", "methods_bias_strength")
        for name in names:
            values = getattr(self, name)
            distinct = len(values) > 0 and len(set(values)) == len(values)
            require(distinct, f"{name} must list distinct values, got {values}")
        require(min(self.exposure_rank) >= 1, f"exposure_rank sizes must be >= 1, got {self.exposure_rank}")
        require(min(self.exposure_layers) >= 0, f"exposure_layers must be >= 0, got {self.exposure_layers}")
        for name in ("bias_strength", "methods_bias_strength"):
            require(min(getattr(self, name)) >= 0, f"{name} values must be >= 0, got {getattr(self, name)}")
        unknown = sorted(set(self.only) - {*SWEEPS, OFFPOLICY})
        require(not unknown, f"only names unknown sweeps {unknown}; valid: {', '.join((*SWEEPS, OFFPOLICY))}")
        require(REFERENCE in self.methods, f"methods must list {REFERENCE!r} (the reference of the gains), got {self.methods}")
        require(
            REFERENCE in self.bias_strength_models,
            f"bias_strength_models must list {REFERENCE!r} (the reference of the gains), got {self.bias_strength_models}",
        )
        require(
            isinstance(self.eigen, Mapping) and self.eigen.get("form", "none") != "none",
            f"eigen must be a dual eigen block with form f1, f2 or power, got {self.eigen!r}",
        )


@dataclass(frozen=True)
class Run:
    """One fit: a model block on the world (bias_strength, seed), seeded by ``seed``."""

    sweep: str
    setting: str
    value: float  # the swept number (size, layers, β); NaN for named settings
    model: str  # the key of the block in study_hypotheses.models
    block: dict[str, Any]
    bias_strength: float
    seed: int

    @property
    def world(self) -> tuple[float, int]:
        return (self.bias_strength, self.seed)


@dataclass(frozen=True)
class StudyPlan:
    """Every fit of the study, checked before any of them runs."""

    world: dict[str, Any]  # the synthetic block of the default world
    config: SyntheticConfig  # that block, resolved
    seeds: tuple[int, ...]
    truth: TruthConfig
    sweeps: SweepsConfig
    runs: tuple[Run, ...]
    workers: int = 1  # fits at once on a local Dask cluster of this many processes
    scheduler: str | None = None  # or on the cluster of this Dask scheduler (tcp://host:8786)
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # study_hypotheses.models, checked

    def runs_of(self, sweep: str) -> list[Run]:
        return [run for run in self.runs if run.sweep == sweep]

    def worlds(self) -> list[tuple[float, int]]:
        return sorted({run.world for run in self.runs})


def _with_exposure(block: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**block, "exposure": {**block.get("exposure", {}), **changes}}


def _checked_block(block: Any, where: str) -> dict[str, Any]:
    """The block with every default filled in; raises naming the parameter."""
    return as_mapping(model_block(block, where))


def plan_study(
    world: SyntheticConfig,
    seeds: list[int],
    truth: TruthConfig,
    models: dict[str, dict[str, Any]],
    sweeps: SweepsConfig,
    workers: int = 1,
    scheduler: str | None = None,
) -> StudyPlan:
    """Check every parameter of the study and list its fits.

    Args:
        world: the simulated world, a ``synthetic`` block (preset plus overrides).
        seeds: one world draw, split and initialization per seed (``parse_seeds``: also
            ``"0-4"`` or ``"0 1 2"`` from the command line).
        truth: ``TruthConfig`` parameters.
        models: model blocks by name; ``mf`` (the reference) and ``dual`` are required.
        sweeps: ``SweepsConfig`` parameters.
        workers: fits at once, on a local Dask cluster of this many single-threaded
            processes (1: in this process).
        scheduler: an existing Dask scheduler (``tcp://host:8786``) to send the fits to.

    Raises:
        ValueError: Naming the first bad parameter.
    """
    config = build_config(SyntheticConfig, world, f"{WHERE}.world")
    seeds = parse_seeds(seeds)
    require(
        isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1,
        f"parameter '{WHERE}.workers' must be an integer >= 1, got {workers!r}",
    )
    require(
        scheduler is None or (isinstance(scheduler, str) and "://" in scheduler),
        f"parameter '{WHERE}.scheduler' must be a Dask scheduler address (tcp://host:8786) or null, got {scheduler!r}",
    )
    require(
        isinstance(seeds, list | tuple)
        and len(seeds) > 0
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        and len(set(seeds)) == len(seeds),
        f"parameter '{WHERE}.seeds' must list distinct non-negative integers, got {seeds!r}",
    )
    truth_config = build_config(TruthConfig, truth, f"{WHERE}.truth")
    sweeps_config = build_config(SweepsConfig, sweeps, f"{WHERE}.sweeps")
    require(isinstance(models, Mapping), f"parameter '{WHERE}.models' must be a mapping, got {models!r}")
    for name in (REFERENCE, DUAL):
        require(name in models, f"parameter '{WHERE}.models.{name}' is missing (the sweeps need it)")
    for sweep in ("bias_strength_models", "methods"):
        for name in getattr(sweeps_config, sweep):
            require(
                name in models,
                f"parameter '{WHERE}.sweeps.{sweep}' names {name!r}, which is not a block of "
                f"'{WHERE}.models' (valid: {', '.join(models)})",
            )
    blocks = {name: _checked_block(block, f"{WHERE}.models.{name}") for name, block in models.items()}
    for strength in {*sweeps_config.bias_strength, *sweeps_config.methods_bias_strength}:
        build_config(SyntheticConfig, {**as_mapping(config), "bias_strength": strength}, f"{WHERE}.world")

    dual, default = blocks[DUAL], config.bias_strength
    where = f"{WHERE}.sweeps"
    variants: list[tuple[str, str, float, str, dict[str, Any], float]] = [
        ("models", "default", math.nan, name, block, default) for name, block in blocks.items()
    ]
    variants += [
        ("exposure_rank", str(size), float(size), DUAL, _with_exposure(dual, embedding_dim=size), default)
        for size in sweeps_config.exposure_rank
    ]
    variants += [
        ("exposure_layers", str(layers), float(layers), DUAL, _with_exposure(dual, num_layers=layers), default)
        for layers in sweeps_config.exposure_layers
    ]
    eigen = dict(sweeps_config.eigen)
    variants += [
        ("spectra", "none", math.nan, REFERENCE, blocks[REFERENCE], default),
        ("spectra", "none", math.nan, DUAL, dual, default),
        ("spectra", str(eigen["form"]), math.nan, DUAL, {**dual, "eigen": eigen}, default),
    ]
    for strength in sweeps_config.bias_strength:
        variants += [
            ("bias_strength", f"{strength:g}", strength, name, blocks[name], strength)
            for name in sweeps_config.bias_strength_models
        ]
    for strength in sweeps_config.methods_bias_strength:
        variants += [
            ("methods", f"{strength:g}", strength, name, blocks[name], strength) for name in sweeps_config.methods
        ]
    variants = [variant for variant in variants if sweeps_config.runs(variant[0])]
    checked = [(*variant[:4], _checked_block(variant[4], where), variant[5]) for variant in variants]
    runs = tuple(Run(*variant, seed) for variant in checked for seed in seeds)
    logger.info("Study plan: %d fits on %d worlds", len(runs), len({run.world for run in runs}))
    return StudyPlan(
        as_mapping(config), config, tuple(seeds), truth_config, sweeps_config, runs, workers, scheduler, blocks
    )
