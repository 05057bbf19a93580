"""The dual model's variants: the *eigen* penalty (config, loss by hand, effect of
training), a smaller exposure tower, and per-tower LightGCN layer counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from debias_pipeline.data.processing import build_normalized_adjacency
from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.dual import DualModel, EigenConfig
from debias_pipeline.models.losses import dual_bce_all_pairs, l2_penalty
from debias_pipeline.models.registry import build_model
from debias_pipeline.models.spectra import top_gap

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
WHERE = "dual.model"


def dual(seed: int = 0, **overrides: Any) -> DualModel:
    params = {
        "name": "dual",
        "preference": {"embedding_dim": 2},
        "exposure": {"embedding_dim": 2},
        "lr": 0.05,
        "weight_decay": 1e-4,
        **overrides,
    }
    return build_model(params, WHERE, seed=seed, device=CPU)


def with_weights(model: DualModel, data: TrainData, **tables: list[list[float]]) -> DualModel:
    """``model`` restored from hand-written tables, e.g. ``preference__user_embedding``."""
    weights = {name.replace("__", "."): torch.tensor(rows) for name, rows in tables.items()}
    return model.load_state_dict({"model": "dual", "weights": weights, "best_epoch": None}, data)


def random_clicks(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    """Clicks of a random preference seen through a popularity-decaying exposure."""
    rng = np.random.default_rng(seed)
    exposure = np.linspace(0.9, 0.1, n_items)[None, :]
    clicks = (rng.random((n_users, n_items)) < 0.5) & (rng.random((n_users, n_items)) < exposure)
    return sp.csr_matrix(clicks.astype(np.float32))


# ---- Configuration ------------------------------------------------------------------


def test_configured_dual_block_has_no_eigen_penalty() -> None:
    block = yaml.safe_load((CONF / "parameters_training.yml").read_text())["dual"]["model"]
    assert block.get("eigen", {}).get("form", "none") == "none"  # the yml keeps only what differs from the class
    assert build_model(block, WHERE, seed=0, device=CPU).config.eigen == EigenConfig()


def test_eigen_block_is_parsed() -> None:
    eigen = {"form": "f2", "k": 1, "lambda_preference": 1e-6, "lambda_exposure": -1}
    config = dual(eigen=eigen).config.eigen
    assert config == EigenConfig(form="f2", k=1, lambda_preference=1e-6, lambda_exposure=-1.0)
    assert isinstance(config.lambda_exposure, float)


def test_eigen_defaults() -> None:
    assert dual().config.eigen == EigenConfig(form="none", k=6, lambda_preference=0.0, lambda_exposure=0.0)


@pytest.mark.parametrize(
    ("eigen", "message"),
    [
        ({"form": "f3"}, r"'dual\.model\.eigen\.form' must be one of \['none', 'f1', 'f2', 'power'\]"),
        ({"k": 0}, r"'dual\.model\.eigen\.k': k must be in 1\.\.30, got 0"),
        ({"k": 31}, r"'dual\.model\.eigen\.k': k must be in 1\.\.30, got 31"),
        ({"k": "6"}, r"'dual\.model\.eigen\.k' must be an integer"),
        ({"lambda_exposure": "-1e-6"}, r"'dual\.model\.eigen\.lambda_exposure' must be a number"),
        ({"form": "f1", "lambda_preference": math.inf}, r"'dual\.model\.eigen\.lambda_preference'.* finite"),
        ({"lambda_exposure": -1e-6}, r"'dual\.model\.eigen\.lambda_exposure': lambda_exposure must be 0 when form"),
        ({"lamda_exposure": 0.0}, r"unknown parameter\(s\) dual\.model\.eigen\.lamda_exposure"),
    ],
)
def test_eigen_errors_name_the_parameter(eigen: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dual(eigen=eigen)


def test_eigen_k_must_fit_every_penalized_tower() -> None:
    # f2 with k = 2 reads 4 dimensions; the exposure tower has 3.
    eigen = {"form": "f2", "k": 2, "lambda_exposure": -1e-6}
    with pytest.raises(ValueError, match=r"'dual\.model\.eigen\.k'.*eigen\.k = 2 .* exposure\.embedding_dim >= 4, got 3"):
        dual(preference={"embedding_dim": 8}, exposure={"embedding_dim": 3}, eigen=eigen)
    # An unpenalized tower may be smaller.
    dual(preference={"embedding_dim": 4}, exposure={"embedding_dim": 3}, eigen={**eigen, "lambda_exposure": 0.0})


# ---- The loss ------------------------------------------------------------------------

# Two users, two items, MF towers of size 2 (rows are users / items).
# Preference: U = [[3, 0], [4, 1]], V = [[0, 1], [1, 0]]. Column norms U: 5, 1; V: 1, 1.
#   e^P = [5, 1]: f1(k=1) = 5, f2(k=1) = 5 - 1 = 4;
#   power: Vᵀ 1/√2 = [1, 1]/√2, U [1, 1]/√2 = [3, 5]/√2, norm √(34/2) = √17.
# Exposure: U = [[1, 2], [0, 2]], V = [[2, 1], [0, 1]]. Column norms U: 1, 2√2; V: 2, √2.
#   e^O = [2√2·√2, 1·2] = [4, 2]: f1(k=1) = 4, f2(k=1) = 2;
#   power: Vᵀ 1/√2 = [2, 2]/√2, U [2, 2]/√2 = [6, 4]/√2, norm √(52/2) = √26.
STATE = {
    "preference__user_embedding": [[3.0, 0.0], [4.0, 1.0]],
    "preference__item_embedding": [[0.0, 1.0], [1.0, 0.0]],
    "exposure__user_embedding": [[1.0, 2.0], [0.0, 2.0]],
    "exposure__item_embedding": [[2.0, 1.0], [0.0, 1.0]],
}
CLICKS = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
LAMBDA_R, LAMBDA_O = 0.5, -0.125
F_PREFERENCE = {"f1": 5.0, "f2": 4.0, "power": math.sqrt(17.0)}
F_EXPOSURE = {"f1": 4.0, "f2": 2.0, "power": math.sqrt(26.0)}


def loss_at_state(eigen: dict[str, Any]) -> float:
    model = with_weights(dual(eigen=eigen), TrainData(sp.csr_matrix(CLICKS)), **STATE)
    return model.loss(torch.tensor(CLICKS)).item()


@pytest.mark.parametrize("form", ["f1", "f2", "power"])
def test_eigen_loss_by_hand(form: str) -> None:
    # f1: 0.5·5 - 0.125·4 = 2; f2: 0.5·4 - 0.125·2 = 1.75; power: 0.5√17 - 0.125√26 ≈ 1.424.
    eigen = {"form": form, "k": 1, "lambda_preference": LAMBDA_R, "lambda_exposure": LAMBDA_O}
    expected_term = LAMBDA_R * F_PREFERENCE[form] + LAMBDA_O * F_EXPOSURE[form]
    assert loss_at_state(eigen) == pytest.approx(loss_at_state({}) + expected_term, rel=1e-6)


@pytest.mark.parametrize(("lambda_r", "lambda_o"), [(LAMBDA_R, 0.0), (0.0, LAMBDA_O)])
def test_each_lambda_weighs_its_own_tower(lambda_r: float, lambda_o: float) -> None:
    eigen = {"form": "f2", "k": 1, "lambda_preference": lambda_r, "lambda_exposure": lambda_o}
    expected_term = lambda_r * F_PREFERENCE["f2"] + lambda_o * F_EXPOSURE["f2"]
    assert loss_at_state(eigen) == pytest.approx(loss_at_state({}) + expected_term, rel=1e-6)


def test_eigen_spectra_are_those_of_the_final_embeddings() -> None:
    # Graph R = [[1, 1], [0, 1]]; preference E^(0): u0 = [1, 0], i1 = [0, 1], the rest 0,
    # so the base spectrum is [1·0, 0·1] = [0, 0]. One LightGCN layer gives final users
    # u0 = [1/2, 1/4], u1 = [0, 1/(2√2)] and items i0 = [1/(2√2), 0], i1 = [1/4, 1/2]:
    # column 0: ||[1/2, 0]|| · ||[1/(2√2), 1/4]|| = 1/2 · √3/4 = √3/8;
    # column 1: ||[1/4, 1/(2√2)]|| · ||[0, 1/2]|| = √3/4 · 1/2 = √3/8.
    # f1(k=1) with λ_r = 1: the loss grows by √3/8, not by 0.
    clicks = sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32))
    data = TrainData(clicks, build_normalized_adjacency(clicks))
    tables = {
        "preference__user_embedding": [[1.0, 0.0], [0.0, 0.0]],
        "preference__item_embedding": [[0.0, 0.0], [0.0, 1.0]],
        "exposure__user_embedding": [[0.5], [-0.5]],
        "exposure__item_embedding": [[1.0], [2.0]],
    }
    towers = {"preference": {"embedding_dim": 2, "num_layers": 1}, "exposure": {"embedding_dim": 1}}
    penalized = with_weights(dual(eigen={"form": "f1", "k": 1, "lambda_preference": 1.0}, **towers), data, **tables)
    plain = with_weights(dual(**towers), data, **tables)
    targets = torch.tensor(clicks.toarray())
    gained = penalized.loss(targets).item() - plain.loss(targets).item()
    assert gained == pytest.approx(math.sqrt(3) / 8, rel=1e-5)
    np.testing.assert_allclose(penalized.spectra()["preference"], [math.sqrt(3) / 8] * 2, rtol=1e-6)
    np.testing.assert_allclose(penalized.spectra()["exposure"], [math.sqrt(0.5) * math.sqrt(5)], rtol=1e-6)


def test_form_none_is_the_plain_dual_loss_bit_for_bit() -> None:
    data = TrainData(random_clicks(7, 5, seed=1))
    targets = torch.tensor(data.interactions.toarray())
    model = dual(seed=3, preference={"embedding_dim": 4}, exposure={"embedding_dim": 3})
    model.module = model.build_module(data, torch.Generator().manual_seed(3))

    loss = model.loss(targets)
    loss.backward()
    gradients = [p.grad.clone() for p in model.module.parameters()]
    model.module.zero_grad()

    # The dual loss as it was before the eigen penalty existed.
    pref_users, pref_items = model.module.preference()
    expo_users, expo_items = model.module.exposure()
    reference = dual_bce_all_pairs(pref_users @ pref_items.T, expo_users @ expo_items.T, targets)
    reference = reference + model.config.weight_decay * l2_penalty([pref_users, pref_items, expo_users, expo_items])
    reference.backward()
    assert torch.equal(loss, reference)
    for gradient, parameter in zip(gradients, model.module.parameters(), strict=True):
        assert torch.equal(gradient, parameter.grad)


def test_zero_lambdas_add_exactly_nothing() -> None:
    data = TrainData(random_clicks(7, 5, seed=1))
    targets = torch.tensor(data.interactions.toarray())
    losses = []
    for eigen in ({}, {"form": "f2", "k": 2}):
        model = dual(seed=3, preference={"embedding_dim": 4}, exposure={"embedding_dim": 3}, eigen=eigen)
        model.module = model.build_module(data, torch.Generator().manual_seed(3))
        losses.append(model.loss(targets))
    assert torch.equal(*losses)


def test_negative_exposure_lambda_on_f2_widens_the_exposure_gap() -> None:
    # 40 epochs on 30 x 20 clicks; λ_o = -1e-3 is far above the study's range, so that a
    # short run shows the effect, and still within weight_decay >= |λ_o| / (2k).
    data = TrainData(random_clicks(30, 20, seed=0))
    common = {"preference": {"embedding_dim": 8}, "exposure": {"embedding_dim": 8}, "epochs": 40}
    common["weight_decay"] = 1e-3
    gaps = {}
    for lambda_o in (0.0, -1e-3):
        eigen = {"form": "f2", "k": 2, "lambda_exposure": lambda_o}
        model = dual(eigen=eigen, **common).fit(data)
        gaps[lambda_o] = top_gap(torch.from_numpy(model.spectra()["exposure"]), 2).item()
    assert gaps[-1e-3] > 2 * gaps[0.0]


# ---- spectra() -------------------------------------------------------------------------


def test_spectra_of_the_fitted_towers() -> None:
    model = with_weights(dual(), TrainData(sp.csr_matrix(CLICKS)), **STATE)
    spectra = model.spectra()
    assert set(spectra) == {"preference", "exposure"}
    np.testing.assert_allclose(spectra["preference"], [5.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(spectra["exposure"], [4.0, 2.0], rtol=1e-6)
    assert all(isinstance(values, np.ndarray) for values in spectra.values())


def test_spectra_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        dual().spectra()


# ---- The dimension and layers variants ------------------------------------------------


def tiny_graph() -> TrainData:
    clicks = random_clicks(12, 9, seed=2)
    return TrainData(clicks, build_normalized_adjacency(clicks))


def test_smaller_exposure_tower_fits() -> None:
    model = dual(preference={"embedding_dim": 8}, exposure={"embedding_dim": 2}, epochs=10).fit(tiny_graph())
    weights = model.state_dict()["weights"]
    assert weights["preference.user_embedding"].shape == (12, 8)
    assert weights["exposure.item_embedding"].shape == (9, 2)
    assert [len(model.spectra()[name]) for name in ("preference", "exposure")] == [8, 2]
    assert model.score().shape == (12, 9)
    assert model.history[-1].train_loss < model.history[0].train_loss


@pytest.mark.parametrize("exposure_layers", range(8))
def test_exposure_layers_zero_to_seven_with_two_preference_layers(exposure_layers: int) -> None:
    towers = {
        "preference": {"embedding_dim": 4, "num_layers": 2},
        "exposure": {"embedding_dim": 4, "num_layers": exposure_layers},
    }
    model = dual(epochs=10, eigen={"form": "f2", "k": 2, "lambda_exposure": -1e-4}, **towers).fit(tiny_graph())
    assert (model.module.preference.num_layers, model.module.exposure.num_layers) == (2, exposure_layers)
    assert model.history[-1].train_loss < model.history[0].train_loss
    assert np.isfinite(model.score()).all()
    assert all(np.isfinite(values).all() for values in model.spectra().values())
