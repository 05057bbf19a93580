"""The dual model against the truth: what goes wrong, and whether an identifying device fixes it.

    python scripts/dual_identification.py diagnose                  # simulator, β 1 and 2, seeds 0..4
    python scripts/dual_identification.py tune --where simulator    # validation only, seeds 100..102
    python scripts/dual_identification.py tune --where coat --raw-root /work/shared/data
    python scripts/dual_identification.py report --where simulator --set supervised=... (see --help)

``diagnose`` fits MF, the dual model and the dual model with its exposure prior on the
coat_like simulator and measures, against the truth: the truth NDCG@5 and its best
epoch along the learning curve, how well σ(ô) recovers the true exposure, whether r̂
follows item popularity or the true exposure more than the true preference does, the
levels of σ(r̂) and σ(ô) against the true rates (the scale the likelihood cannot fix),
and σ(r̂) on the unclicked pairs. ``tune`` fits every variant's grid (VARIANTS) and
prints the mean validation NDCG@5 of each setting (nothing else is read). ``report``
fits MF, the plain dual model, the chosen variants and CausE on the reported seeds and
prints mean ± std and a paired t-test against MF: truth NDCG@5 and truth Spearman on
the simulator (β 0, 1, 2), test Recall@5 / NDCG@5 on Coat.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from debias_pipeline.config.params import parse_seeds
from debias_pipeline.data.loaders.parsing import RawData
from debias_pipeline.datasets.raw import RawDataset
from debias_pipeline.evaluation.truth import recovery_metrics, spearman, truth_ranking_metrics
from debias_pipeline.models.contract import Recommender
from debias_pipeline.models.dual import DualModel
from debias_pipeline.models.registry import build_model
from debias_pipeline.training.inputs import ProcessedData, process_dataset, treatment_inputs

PROJECT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
K, TOP_N = 5, 10  # truth NDCG@5 against each user's 10 best unclicked items (the study's TruthConfig)
MF = {"name": "mf", "weight_decay": 1e-5}  # parameters_training.yml's mf.model
DUAL = {"name": "dual"}
CAUSE = {"name": "cause", "weight_decay": 1e-5}  # parameters_debias.yml's cause.model: the same unbiased rows, no dual
PRIOR = {"prior": "popularity"}
# A control: the plain dual model, early-stopped on the same half of the validation users
# as the supervised variant and CausE, to tell the supervision from the halved stopping set.
HALF_STOP = "dual_halfstop"

# Each variant's grid: the one or two hyperparameters tuned on validation.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "dual_prior": {
        f"learned={learned},d={d}": {
            "name": "dual",
            "exposure": {**PRIOR, "prior_learned": learned, "embedding_dim": d},
        }
        for learned in (True, False)
        for d in (4, 200)
    },
    "dual_supervised": {
        f"lambda_s={w:g}": {"name": "dual", "exposure": {"supervision_weight": w}} for w in (0.1, 0.3, 1.0, 3.0, 10.0)
    },
    "dual_popconstraint": {
        f"lambda_c={w:g},s={s:g}": {"name": "dual", "exposure": {"popularity_tie_weight": w, "popularity_tie_slope": s}}
        for w in (0.01, 0.1, 1.0, 10.0)
        for s in (0.5, 1.0)
    },
}


def synthetic_data(bias_strength: float, seed: int) -> ProcessedData:
    """One coat_like world, processed as the study processes it (every other block at its default)."""
    raw = RawData(name="synthetic", interactions=pd.DataFrame(), files={})
    return process_dataset(
        raw, "synthetic", seed=seed, synthetic={"preset": "coat_like", "bias_strength": bias_strength}
    )


class TruthCurve:
    """The run's validator, recording the truth NDCG@K at every evaluation beside it."""

    def __init__(self, inner: Any, data: ProcessedData) -> None:
        self.inner, self.data, self.curve = inner, data, []
        self.metric = inner.metric
        self.window = getattr(inner, "window", 1)

    def score(self, model: Recommender) -> float:
        truth = truth_ranking_metrics(model.score, self.data.ground_truth, self.data.train_matrix, K, TOP_N)
        self.curve.append(truth.ndcg)
        return self.inner.score(model)


def fit(
    block: dict[str, Any], data: ProcessedData, seed: int, track_truth: bool = False, half_stop: bool = False
) -> tuple[Recommender, dict[str, Any]]:
    """Fit one block as a training run does (CausE and the supervised dual model on half the
    validation users, stopped on the other half; ``half_stop``: any model stopped so); its
    validation and test metrics."""
    model = build_model(block, "dual_identification", seed=seed, device=CPU)
    if half_stop:
        model.needs_treatment = True  # the dual model with λ_s = 0 ignores the treatment rows it is handed
    train, evaluators = treatment_inputs(model, data.train_data, data.evaluators)
    validation = TruthCurve(evaluators.validation, data) if track_truth else evaluators.validation
    started = time.perf_counter()
    model.fit(train, validation=validation)
    row: dict[str, Any] = {"fit_seconds": time.perf_counter() - started, "best_epoch": model.best_epoch}
    row["epochs_run"] = len(model.history)
    row["validation_ndcg"] = evaluators.validation.report(model)[0][f"validation_ndcg_at_{K}"]
    test = evaluators.test.report(model)[0]
    row["test_recall"], row["test_ndcg"] = test[f"test_recall_at_{K}"], test[f"test_ndcg_at_{K}"]
    if track_truth:
        row["truth_curve"] = validation.curve
    return model, row


def truth_row(model: Recommender, data: ProcessedData, seed: int) -> dict[str, float]:
    """Truth NDCG@K, the preference recovery (Spearman, AUC) and, for a dual model, the exposure's."""
    truth = data.ground_truth
    row = {"truth_ndcg": truth_ranking_metrics(model.score, truth, data.train_matrix, K, TOP_N).ndcg}
    preference = recovery_metrics(model.score(), truth, "preference", 1_000_000, seed)
    row["truth_spearman"], row["preference_auc"] = preference["spearman"], preference["auc"]
    if isinstance(model, DualModel):
        exposure = recovery_metrics(model.exposure_scores().numpy(), truth, "exposure", 1_000_000, seed)
        row["exposure_auc"], row["exposure_oracle_auc"] = exposure["auc"], exposure["oracle_auc"]
        row["exposure_spearman"] = exposure["spearman"]
    return row


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def diagnosis_row(model: Recommender, data: ProcessedData) -> dict[str, float]:
    """What the fitted preference (and exposure) says about the world, beside the truth."""
    truth = data.ground_truth
    clicks = data.train_matrix.toarray() > 0  # (n_users, n_items)
    preference = model.score()  # (n_users, n_items) r̂
    true_preference, true_exposure = truth.logits("preference"), truth.logits("exposure")
    popularity = clicks.sum(axis=0)  # (n_items,)
    unclicked = ~clicks
    row = {
        # Item level: does r̂ rank items by popularity more than the true preference does?
        "item_pref_vs_popularity": spearman(preference.mean(axis=0), popularity),
        "true_item_pref_vs_popularity": spearman(true_preference.mean(axis=0), popularity),
        # Pair level: how much of the true exposure r̂ carries (the truth's own is the reference).
        "pref_vs_true_exposure": spearman(preference, true_exposure),
        "true_pref_vs_true_exposure": spearman(true_preference, true_exposure),
        # Levels: the likelihood sees only σ(r̂)σ(ô); the truth's P(r) and P(o) are known here.
        "mean_sigmoid_pref": float(_sigmoid(preference).mean()),
        "true_mean_pref": float(_sigmoid(true_preference).mean()),
        # The unclicked pairs: what r̂ makes of them against the truth.
        "unclicked_mean_sigmoid_pref": float(_sigmoid(preference[unclicked]).mean()),
        "unclicked_true_mean_pref": float(_sigmoid(true_preference[unclicked]).mean()),
        "unclicked_pref_spearman": spearman(preference[unclicked], true_preference[unclicked]),
    }
    if isinstance(model, DualModel):
        exposure = model.exposure_scores().numpy()
        row["mean_sigmoid_expo"] = float(_sigmoid(exposure).mean())
        row["true_mean_expo"] = float(_sigmoid(true_exposure).mean())
        row["mean_click"] = float((_sigmoid(preference) * _sigmoid(exposure)).mean())
        row["pref_vs_expo"] = spearman(preference, exposure)
        row["item_expo_vs_popularity"] = spearman(exposure.mean(axis=0), popularity)
    row["true_mean_click"] = float(clicks.mean())
    return row


def reference_row(data: ProcessedData) -> dict[str, float]:
    """Truth NDCG@K of a perfect click model P(r)·P(o) and of train popularity."""
    truth, train = data.ground_truth, data.train_matrix
    popularity = np.asarray(train.sum(axis=0)).ravel()
    click = truth_ranking_metrics(
        lambda users: truth.probabilities("preference", users) * truth.probabilities("exposure", users),
        truth,
        train,
        K,
        TOP_N,
    )
    popular = truth_ranking_metrics(
        lambda users: np.broadcast_to(popularity, (len(users), popularity.size)), truth, train, K, TOP_N
    )
    return {"click_oracle_truth_ndcg": click.ndcg, "popularity_truth_ndcg": popular.ndcg}


def diagnose(seeds: list[int], strengths: list[float]) -> pd.DataFrame:
    rows = []
    models = {"mf": MF, "dual": DUAL, "dual_prior": {"name": "dual", "exposure": {**PRIOR, "prior_learned": True}}}
    for strength in strengths:
        for seed in seeds:
            data = synthetic_data(strength, seed)
            references = reference_row(data)
            for name, block in models.items():
                model, row = fit(block, data, seed, track_truth=True)
                curve = np.array(row.pop("truth_curve"))
                row.update(truth_row(model, data, seed), **diagnosis_row(model, data), **references)
                # The learning curve against the truth: the best epoch the validation could have picked.
                row["truth_best_epoch"] = int(np.argmax(curve)) + 1
                row["truth_ndcg_at_truth_best"] = float(curve.max())
                row["train_loss_at_best"] = model.history[model.best_epoch - 1].train_loss
                row["train_loss_last"] = model.history[-1].train_loss
                rows.append({"model": name, "bias_strength": strength, "seed": seed, **row})
            print(f"β {strength:g} seed {seed}: done", flush=True)
    return pd.DataFrame(rows)


def coat_data(raw_root: str) -> Callable[[int], ProcessedData]:
    raw = RawDataset(dataset="coat", root=raw_root).load()
    return lambda seed: process_dataset(raw, "coat", seed=seed)


def worlds(
    where: str, seeds: list[int], strengths: list[float], raw_root: str
) -> Iterator[tuple[float, int, ProcessedData]]:
    if where == "coat":
        load = coat_data(raw_root)
        for seed in seeds:
            yield float("nan"), seed, load(seed)
        return
    for strength in strengths:
        for seed in seeds:
            yield strength, seed, synthetic_data(strength, seed)


def tune(where: str, seeds: list[int], strengths: list[float], raw_root: str) -> pd.DataFrame:
    rows = []
    for strength, seed, data in worlds(where, seeds, strengths, raw_root):
        for variant, grid in VARIANTS.items():
            for setting, block in grid.items():
                _, row = fit(block, data, seed)
                rows.append(
                    {
                        "variant": variant,
                        "setting": setting,
                        "bias_strength": strength,
                        "seed": seed,
                        "validation_ndcg": row["validation_ndcg"],
                        "best_epoch": row["best_epoch"],
                        "fit_seconds": row["fit_seconds"],
                    }
                )
        print(f"{where} β {strength:g} seed {seed}: done", flush=True)
    return pd.DataFrame(rows)


def report(
    where: str, seeds: list[int], strengths: list[float], raw_root: str, chosen: dict[str, str], only: list[str]
) -> pd.DataFrame:
    models = {"mf": MF, "dual": DUAL, **{v: VARIANTS[v][s] for v, s in chosen.items()}, "cause": CAUSE, HALF_STOP: DUAL}
    models = {name: block for name, block in models.items() if name in only or (not only and name != HALF_STOP)}
    rows = []
    for strength, seed, data in worlds(where, seeds, strengths, raw_root):
        for name, block in models.items():
            model, row = fit(block, data, seed, half_stop=name == HALF_STOP)
            if where == "simulator":
                row.update(truth_row(model, data, seed))
            rows.append({"model": name, "bias_strength": strength, "seed": seed, **row})
        print(f"{where} β {strength:g} seed {seed}: done", flush=True)
    return pd.DataFrame(rows)


def paired_table(frame: pd.DataFrame, columns: list[str]) -> str:
    """Mean ± std per model (and β) of each column, and the paired t-test p against MF."""
    lines = ["| β | model | " + " | ".join(columns) + " | " + " | ".join(f"Δ vs MF, p ({c})" for c in columns) + " |"]
    lines.append("|---" * (2 + 2 * len(columns)) + "|")
    for strength, group in frame.groupby("bias_strength", dropna=False):
        reference = group[group.model == "mf"].sort_values("seed")
        for model, rows in group.groupby("model", sort=False):
            rows = rows.sort_values("seed")
            cells = [f"{rows[c].mean():.4f} ± {rows[c].std(ddof=1):.4f}" for c in columns]
            tests = []
            for c in columns:
                if model == "mf":
                    tests.append("–")
                    continue
                gap = rows[c].to_numpy() - reference[c].to_numpy()
                tests.append(f"{gap.mean():+.4f}, p = {stats.ttest_rel(rows[c], reference[c]).pvalue:.3f}")
            lines.append(f"| {strength:g} | {model} | " + " | ".join(cells) + " | " + " | ".join(tests) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["diagnose", "tune", "report"])
    parser.add_argument("--where", choices=["simulator", "coat"], default="simulator")
    parser.add_argument(
        "--seeds", default=None, help="diagnose: 0-4; tune: 100-102; report: 0-4 (simulator), 0-9 (coat)"
    )
    parser.add_argument("--bias-strengths", default="0,1,2", help="simulator β (diagnose: 1,2)")
    parser.add_argument("--raw-root", default=str(PROJECT / "data" / "01_raw"), help="folder of the raw coat/ folder")
    parser.add_argument("--set", nargs="*", default=[], help="report: variant=setting, a setting name of VARIANTS")
    parser.add_argument(
        "--models", nargs="*", default=[], help=f"report: only these (mf first; {HALF_STOP}: a control)"
    )
    parser.add_argument("--out", default=None, help="write every row as JSON lines here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    default_seeds = {"diagnose": "0-4", "tune": "100-102", "report": "0-4" if args.where == "simulator" else "0-9"}
    seeds = list(parse_seeds(args.seeds or default_seeds[args.command]))
    strengths = [
        float(b)
        for b in (
            "1,2" if args.command == "diagnose" and args.bias_strengths == "0,1,2" else args.bias_strengths
        ).split(",")
    ]
    started = time.perf_counter()
    if args.command == "diagnose":
        frame = diagnose(seeds, strengths)
        columns = [c for c in frame.columns if c not in ("model", "bias_strength", "seed")]
        print(frame.groupby(["bias_strength", "model"], sort=False)[columns].mean().T.to_string(float_format="%.4f"))
    elif args.command == "tune":
        frame = tune(args.where, seeds, strengths, args.raw_root)
        summary = frame.groupby(["variant", "setting"], sort=False).agg(
            validation_ndcg=("validation_ndcg", "mean"),
            std=("validation_ndcg", "std"),
            best_epoch=("best_epoch", "mean"),
        )
        print(summary.to_string(float_format="%.4f"))
        print("\nchosen (highest mean validation NDCG@5):")
        for variant, group in summary.groupby(level=0, sort=False):
            print(f"  {variant}={group['validation_ndcg'].idxmax()[1]}")
    else:
        chosen = dict(item.split("=", 1) for item in args.set)
        frame = report(args.where, seeds, strengths, args.raw_root, chosen, args.models)
        columns = ["truth_ndcg", "truth_spearman"] if args.where == "simulator" else ["test_recall", "test_ndcg"]
        print(paired_table(frame, columns))
        extra = ["validation_ndcg", "best_epoch", "fit_seconds"] + (
            ["exposure_auc", "exposure_spearman"] if args.where == "simulator" else []
        )
        print(
            frame.groupby(["bias_strength", "model"], sort=False, dropna=False)[extra]
            .mean()
            .to_string(float_format="%.4f")
        )
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(row, default=float) for row in frame.to_dict("records")) + "\n")
    print(f"\n{args.command} {args.where}: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
