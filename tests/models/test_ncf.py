"""GMF, MLP and NeuMF: the sampled BCE by hand, the towers, the epoch's examples and
NeuMF's pretraining."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from debias_pipeline.models.contract import TrainData
from debias_pipeline.models.losses import sampled_bce_loss
from debias_pipeline.models.mlp import MLPConfig
from debias_pipeline.models.ncf import SampledBCEEpochs
from debias_pipeline.models.registry import build_model

CPU = torch.device("cpu")


def data(seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    return TrainData(sp.csr_matrix((rng.random((20, 15)) < 0.3).astype(np.float32)))


def build(name: str, seed: int = 3, **block: object):
    params = {"name": name, "embedding_dim": 4, "num_layers": 2, "epochs": 3, "batch_size": 16, **block}
    if name == "gmf":
        params.pop("num_layers")
    return build_model(params, "test.model", seed=seed, device=CPU)


def test_sampled_bce_by_hand() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # -log σ(2), -log(1 - σ(-1)), -log(1 - σ(0.5)), -log σ(0)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5)) + math.log(2)) / 4
    assert sampled_bce_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_sampled_bce_is_never_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = torch.randn(64, generator=generator) * 20
        labels = (torch.rand(64, generator=generator) < 0.2).float()
        assert sampled_bce_loss(logits, labels).item() >= 0


def test_gmf_batch_loss_by_hand() -> None:
    model = build("gmf", embedding_dim=2, weight_decay=0.1)
    module = model.build_module(data(), torch.Generator().manual_seed(0))
    model.module = module
    with torch.no_grad():
        module.user_embedding.weight[0] = torch.tensor([1.0, 2.0])
        module.item_embedding.weight[3] = torch.tensor([0.5, -1.0])
        module.item_embedding.weight[4] = torch.tensor([2.0, 1.0])
        module.output.weight[:] = torch.tensor([[1.0, 0.5]])
        module.output.bias[:] = 0.25
    users, items, labels = torch.tensor([0, 0]), torch.tensor([3, 4]), torch.tensor([1.0, 0.0])
    # f(0, 3) = 1·(1·0.5) + 0.5·(2·-1) + 0.25 = -0.25; f(0, 4) = 2 + 0.5·2 + 0.25 = 3.25
    bce = (math.log1p(math.exp(0.25)) + math.log1p(math.exp(3.25))) / 2
    # L2: (||p_0||² + ||q_3||²) + (||p_0||² + ||q_4||²) over the 2 examples
    l2 = ((5 + 1.25) + (5 + 5)) / 2
    assert model.batch_loss(users, items, labels).item() == pytest.approx(bce + 0.1 * l2, rel=1e-6)


@pytest.mark.parametrize(
    ("factors", "layers", "tower", "side"),
    [(8, 3, (32, 16, 8), 32), (8, 1, (8,), 8), (8, 0, (), 4), (16, 4, (128, 64, 32, 16), 128)],
)
def test_the_ncf_tower_halves_each_layer(factors: int, layers: int, tower: tuple, side: int) -> None:
    config = MLPConfig.model_validate({"embedding_dim": factors, "num_layers": layers})
    assert (config.tower, config.side_dim) == (tower, side)
    assert config.output_dim == factors


def test_an_explicit_tower_is_taken_as_given() -> None:
    config = MLPConfig.model_validate({"hidden_sizes": [20, 7]})
    assert (config.tower, config.side_dim, config.output_dim) == ((20, 7), 20, 7)
    model = build("mlp", hidden_sizes=[20, 7])
    module = model.build_module(data(), torch.Generator().manual_seed(0))
    widths = [layer.out_features for layer in module.tower if isinstance(layer, torch.nn.Linear)]
    assert widths == [20, 7] and module.user_embedding.weight.shape[1] == 20


def test_an_odd_factor_count_without_hidden_layers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"test\.model.*embedding_dim must be even"):
        build("mlp", embedding_dim=5, num_layers=0)


def test_an_epoch_holds_every_positive_and_num_negatives_non_positives_each() -> None:
    train = data()
    model = build("gmf", num_negatives=3)
    model.n_items = train.n_items
    model.module = model.build_module(train, torch.Generator().manual_seed(0))
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    original = model.batch_loss

    def spy(users, items, labels):
        seen.append((users, items, labels))
        return original(users, items, labels)

    model.batch_loss = spy
    epoch = SampledBCEEpochs(model, train, torch.optim.Adam(model.module.parameters(), lr=1e-3))
    loss = float(epoch())
    users = torch.cat([s[0] for s in seen]).numpy()
    items = torch.cat([s[1] for s in seen]).numpy()
    labels = torch.cat([s[2] for s in seen]).numpy()
    dense = train.interactions.toarray() > 0
    assert all(len(s[0]) <= 16 for s in seen)
    assert labels.sum() == train.interactions.nnz and labels.size == 4 * train.interactions.nnz
    assert dense[users[labels == 1], items[labels == 1]].all()
    assert not dense[users[labels == 0], items[labels == 0]].any()
    positives = sorted(zip(users[labels == 1], items[labels == 1], strict=True))
    assert positives == sorted(zip(*train.interactions.nonzero(), strict=True))
    assert np.bincount(users[labels == 0], minlength=20).tolist() == (3 * np.diff(train.interactions.indptr)).tolist()
    assert loss > 0


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_sgd_is_an_option(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"pretrain": False} if name == "neumf" else {}
    made: list[str] = []
    for optimizer in (torch.optim.SGD, torch.optim.Adam):
        original = optimizer.__init__

        def spy(self, *args, _original=original, **kwargs):
            made.append(type(self).__name__)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(optimizer, "__init__", spy)
    adam = build(name, lr=0.05, **extra).fit(data())
    sgd = build(name, optimizer="sgd", lr=0.05, **extra).fit(data())
    assert made == ["Adam", "SGD"]
    assert not np.allclose(adam.score(), sgd.score())  # the same rate, another optimizer


def _pretrained() -> dict[str, dict]:
    return {name: build(name).fit(data()).state_dict() for name in ("gmf", "mlp")}


def test_pretrained_neumf_starts_as_the_average_of_gmf_and_mlp() -> None:
    states = _pretrained()
    gmf, mlp = (build(name).load_state_dict(states[name], data()) for name in ("gmf", "mlp"))
    neumf = build("neumf", pretrain=True)
    module = neumf.build_module(data(), torch.Generator().manual_seed(0))
    neumf.initialize(module, states)
    users, items = torch.arange(20).repeat_interleave(15), torch.arange(15).repeat(20)
    with torch.no_grad():
        expected = 0.5 * gmf.module(users, items) + 0.5 * mlp.module(users, items)
        torch.testing.assert_close(module(users, items), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(module.gmf.user_embedding.weight, gmf.module.user_embedding.weight)
        torch.testing.assert_close(module.mlp.tower[0].weight, mlp.module.tower[0].weight)


def test_pretrained_neumf_fine_tunes_from_there() -> None:
    states = _pretrained()
    scratch = build("neumf", pretrain=False).fit(data())
    pretrained = build("neumf", pretrain=True, optimizer="sgd").fit(data(), pretrained=states)
    assert not np.allclose(scratch.score(), pretrained.score())
    assert pretrained.history[0].train_loss < scratch.history[0].train_loss


def test_pretraining_needs_both_models_of_the_same_sizes() -> None:
    states = _pretrained()
    with pytest.raises(ValueError, match="needs the fitted mlp"):
        build("neumf", pretrain=True).fit(data(), pretrained={"gmf": states["gmf"]})
    with pytest.raises(ValueError, match=r"'neumf\.model\.embedding_dim' \(6\) must equal 'gmf\.model\.embedding_dim' \(4\)"):
        build("neumf", pretrain=True, embedding_dim=6, num_layers=1).fit(data(), pretrained=states)
    with pytest.raises(ValueError, match=r"MLP tower of 'neumf\.model'.*'mlp\.model'"):
        build("neumf", pretrain=True, num_layers=3).fit(data(), pretrained=states)
    with pytest.raises(ValueError, match="takes no pretrained weights"):
        build("gmf").fit(data(), pretrained=states)
