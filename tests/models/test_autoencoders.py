"""Mult-VAE and Mult-DAE: the likelihoods, the KL and the β-weighted ELBO by hand, one
training step's loss recomputed from the network's parts, the annealing and fold-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import autoencoder_nll, gaussian_kl, negative_elbo
from debias_pipeline.models.multvae import normalized_rows
from debias_pipeline.models.registry import build_model, check_model_fits_protocol

CPU = torch.device("cpu")


def data(seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    clicks = (rng.random((30, 25)) < 0.25).astype(np.float32)
    clicks[7] = 0.0  # a user without a click
    return TrainData(sp.csr_matrix(clicks))


def build(name: str, seed: int = 3, **block: object):
    params = {"name": name, "hidden_dims": [12], "latent_dim": 5, "epochs": 3, "batch_size": 8, **block}
    return build_model(params, "test.model", seed=seed, device=CPU)


LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
CLICKS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def _log_softmax(row: list[float]) -> list[float]:
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_multinomial_likelihood_by_hand() -> None:
    first, second = _log_softmax([1, 2, 3]), _log_softmax([0, -1, 0.5])
    expected = (-(first[0] + first[2]) - second[1]) / 2
    assert autoencoder_nll(LOGITS, CLICKS, "multinomial").item() == pytest.approx(expected, rel=1e-6)


def test_logistic_likelihood_by_hand() -> None:
    def bce(logit: float, label: float) -> float:
        return math.log1p(math.exp(-logit)) if label else math.log1p(math.exp(logit))

    rows = [sum(bce(l, c) for l, c in zip(lr, cr, strict=True)) for lr, cr in zip(LOGITS.tolist(), CLICKS.tolist(), strict=True)]
    assert autoencoder_nll(LOGITS, CLICKS, "logistic").item() == pytest.approx(sum(rows) / 2, rel=1e-6)


def test_gaussian_likelihood_by_hand() -> None:
    # row 1: (0)² + (−2)² + (−2)² = 8; row 2: 0 + 4 + 0.25 = 4.25; halved, mean of the two
    assert autoencoder_nll(LOGITS, CLICKS, "gaussian").item() == pytest.approx((8 / 2 + 4.25 / 2) / 2, rel=1e-6)


def test_unknown_likelihood_is_refused() -> None:
    with pytest.raises(ValueError, match="likelihood"):
        autoencoder_nll(LOGITS, CLICKS, "poisson")


def test_gaussian_kl_by_hand() -> None:
    mean = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    log_variance = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # user 1: ½[(1 + 1 − 1 − 0) + (2 + 0 − 1 − log 2)]; user 2: 0
    expected = 0.5 * (1 + 1 - math.log(2)) / 2
    assert gaussian_kl(mean, log_variance).item() == pytest.approx(expected, rel=1e-6)


def test_negative_elbo_weights_the_kl_by_beta() -> None:
    mean, log_variance = torch.tensor([[0.5, -0.5], [1.0, 0.0]]), torch.tensor([[0.1, -0.2], [0.0, 0.3]])
    nll, kl = autoencoder_nll(LOGITS, CLICKS, "multinomial"), gaussian_kl(mean, log_variance)
    for beta in (0.0, 0.2, 1.0):
        value = negative_elbo(LOGITS, CLICKS, beta, "multinomial", mean, log_variance)
        assert value.item() == pytest.approx((nll + beta * kl).item(), rel=1e-6)
    assert negative_elbo(LOGITS, CLICKS, 0.7, "multinomial").item() == pytest.approx(nll.item(), rel=1e-6)


@pytest.mark.parametrize("likelihood", ["multinomial", "logistic", "gaussian"])
def test_the_losses_are_never_negative(likelihood: str) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        logits = torch.randn(6, 40, generator=generator) * 10
        clicks = (torch.rand(6, 40, generator=generator) < 0.3).float()
        mean, log_variance = torch.randn(6, 4, generator=generator) * 3, torch.randn(6, 4, generator=generator) * 3
        assert autoencoder_nll(logits, clicks, likelihood).item() >= 0
        assert gaussian_kl(mean, log_variance).item() >= 0
        assert negative_elbo(logits, clicks, 0.2, likelihood, mean, log_variance).item() >= 0


def test_one_step_of_the_vae_loss_recomputed_from_its_parts() -> None:
    train = data()
    model = build("multvae", dropout=0.0, anneal_cap=0.3, total_anneal_steps=10)
    model.module = model.build_module(train, torch.Generator().manual_seed(0))
    batch = train.interactions[:8]
    loss = model.batch_loss(batch, torch.Generator().manual_seed(42), updates=2)
    # By hand: the rows at unit norm, the encoder, z = μ + ε σ with the same draws.
    dense = torch.from_numpy(batch.toarray())
    normalized = dense / dense.norm(dim=1, keepdim=True).clamp_min(1e-30)
    encoder, decoder = model.module.encoder, model.module.decoder
    code = encoder[1](torch.tanh(encoder[0](normalized)))
    mean, log_variance = code[:, :5], code[:, 5:]
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(42))
    logits = decoder[1](torch.tanh(decoder[0](mean + noise * torch.exp(0.5 * log_variance))))
    nll = -(torch.log_softmax(logits, dim=1) * dense).sum(dim=1).mean()
    kl = 0.5 * (log_variance.exp() + mean.pow(2) - 1 - log_variance).sum(dim=1).mean()
    assert loss.item() == pytest.approx((nll + 0.2 * kl).item(), rel=1e-5)  # β = min(0.3, 2 / 10)


def test_one_step_of_the_dae_loss_recomputed_from_its_parts() -> None:
    train = data()
    model = build("multdae", weight_decay=0.01)
    model.module = model.build_module(train, torch.Generator().manual_seed(0))
    batch = train.interactions[:8]
    draws = torch.rand(batch.nnz, generator=torch.Generator().manual_seed(1))
    loss = model.batch_loss(batch, torch.Generator().manual_seed(1), updates=0)
    kept = batch.copy()
    kept.data = (draws.numpy() >= 0.5).astype(np.float32) / 0.5
    dense = torch.from_numpy(batch.toarray())
    # The paper's order: the clicks at unit norm, then dropout (kept ones scaled by 1/0.5).
    normalized = dense / dense.norm(dim=1, keepdim=True).clamp_min(1e-30) * torch.from_numpy(kept.toarray())
    encoder, decoder = model.module.encoder, model.module.decoder
    z = encoder[1](torch.tanh(encoder[0](normalized)))
    logits = decoder[1](torch.tanh(decoder[0](z)))
    nll = -(torch.log_softmax(logits, dim=1) * torch.from_numpy(batch.toarray())).sum(dim=1).mean()
    l2 = sum(layer.weight.pow(2).sum() for layer in [*encoder, *decoder])
    assert loss.item() == pytest.approx((nll + 0.01 * l2).item(), rel=1e-5)


def test_beta_rises_linearly_to_the_cap() -> None:
    model = build("multvae", anneal_cap=0.2, total_anneal_steps=1000)
    assert [model.beta(n) for n in (0, 100, 200, 5000)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert build("multdae").beta(5000) == 0.0


def test_normalized_rows_unit_norm_empty_rows_and_dropout() -> None:
    clicks = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    dense = normalized_rows(clicks, CPU).to_dense()
    np.testing.assert_allclose(dense.norm(dim=1).numpy(), [1, 0, 1], rtol=1e-6)
    keep = np.array([2.0, 0.0, 2.0, 2.0])  # dropout 0.5: the second click dropped, the rest doubled
    dropped = normalized_rows(clicks, CPU, keep).to_dense().numpy()
    # Normalized first (each click 1/√3), then dropped out: dropout(l2_normalize(x)).
    np.testing.assert_allclose(dropped[0], [2 / math.sqrt(3), 0, 0, 2 / math.sqrt(3)], rtol=1e-6)


def test_the_sparse_encoder_equals_the_dense_one() -> None:
    train = data()
    model = build("multvae")
    module = model.build_module(train, torch.Generator().manual_seed(0))
    sparse = normalized_rows(train.interactions, CPU)
    with torch.no_grad():
        a, b = module.encode(sparse), module.encode(sparse.to_dense())
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["multvae", "multdae"])
def test_fold_in_of_a_train_row_is_its_score(name: str) -> None:
    train = data()
    model = build(name).fit(train)
    np.testing.assert_allclose(model.fold_in(train.interactions[[2, 5]]), model.score(np.array([2, 5])), rtol=1e-6)
    check_model_fits_protocol(type(model), "strong_generalization")


@pytest.mark.parametrize("likelihood", ["logistic", "gaussian"])
def test_the_other_likelihoods_train(likelihood: str) -> None:
    model = build("multvae", likelihood=likelihood, epochs=5, lr=0.01).fit(data())
    assert model.history[-1].train_loss < model.history[0].train_loss
