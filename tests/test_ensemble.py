"""The ensemble kernel (farm.ensemble) trains the same models as vmap and the per-model loop."""

import dataclasses

import pytest
import torch
from torch import nn

from farm.config import DataConfig, EarlyStoppingConfig, ModelConfig, TrainConfig, model_seed
from farm.data import load_dataset
from farm.ensemble import EnsembleMLP, ensemble_kernel, mlp_layers
from farm.membership import lira_membership
from farm.models import build_model
from farm.optim import FlatOptimizer, make_optimizer
from farm.train import steps_per_epoch, train_group

BASE = TrainConfig(epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(DataConfig(name="digits", subsample=240), seed=0)
    member = lira_membership(n_models=3, n_examples=len(data), p_in=0.5, seed=0)
    return data, torch.tensor(data.x), torch.tensor(data.y), member


def _train(digits, model_cfg, train_cfg, **how):
    data, x, y, member = digits
    return train_group(model_cfg=model_cfg, train_cfg=train_cfg, info=data.info, x=x, y=y, member=member,
                       seeds=[model_seed(0, m) for m in range(3)],
                       n_steps_per_epoch=steps_per_epoch(member, train_cfg.batch_size), **how)


def _assert_same_weights(a, b, atol=1e-5):
    for sa, sb in zip(a.state_dicts, b.state_dicts, strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=1e-4)


CASES = {
    "mlp adam": (ModelConfig(name="mlp", hidden=(32,)), BASE),
    "mlp sgd, weight decay, label smoothing": (
        ModelConfig(name="mlp", hidden=(32, 16)),
        dataclasses.replace(BASE, optimizer="sgd", lr=0.05, weight_decay=1e-3, label_smoothing=0.1)),
    "logistic sgd without momentum": (ModelConfig(name="logistic"),
                                      dataclasses.replace(BASE, optimizer="sgd", lr=0.05, momentum=0.0)),
    "mlp early stopping": (ModelConfig(name="mlp", hidden=(16,)),
                           dataclasses.replace(BASE, epochs=3, early_stopping=EarlyStoppingConfig(patience=1))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_equals_vmap(digits, case):
    model_cfg, train_cfg = CASES[case]
    kernel, vmap = _train(digits, model_cfg, train_cfg), _train(digits, model_cfg, train_cfg, kernel=False)
    _assert_same_weights(kernel, vmap)
    for a, b in zip(kernel.details, vmap.details, strict=True):  # early stopping: the same epochs kept
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-5) for k in a)
    x = digits[1]
    torch.testing.assert_close(kernel.predict(x), vmap.predict(x), atol=1e-5, rtol=1e-4)


def test_kernel_equals_the_per_model_loop(digits):
    model_cfg, train_cfg = CASES["mlp adam"]
    _assert_same_weights(_train(digits, model_cfg, train_cfg), _train(digits, model_cfg, train_cfg, vectorize=False))


def test_dropout_and_mixup_draw_the_same_masks_as_vmap(digits):
    # vmap's randomness="different" draws one mask over the stacked activations: so does the kernel
    model_cfg = ModelConfig(name="mlp", hidden=(32, 16), dropout=0.3)
    train_cfg = dataclasses.replace(BASE, mixup_alpha=0.4, label_smoothing=0.1)
    kernel, vmap = _train(digits, model_cfg, train_cfg), _train(digits, model_cfg, train_cfg, kernel=False)
    _assert_same_weights(kernel, vmap)
    untrained = _train(digits, model_cfg, dataclasses.replace(train_cfg, lr=0.0))
    moved = max(float((a[k] - b[k]).abs().max()) for a, b in zip(kernel.state_dicts, untrained.state_dicts, strict=True)
                for k in a)
    assert moved > 1e-2  # the comparison is between trained models


def test_mlp_layers_reads_the_registry_models_and_rejects_others(digits):
    info = digits[0].info
    layers = mlp_layers(build_model(ModelConfig(name="mlp", hidden=(8, 4), dropout=0.2), info=info))
    expected = [("1.", True, 0.2), ("4.", True, 0.2), ("7.", False, 0)]
    assert [(la.prefix, la.relu, la.dropout) for la in layers] == expected
    assert mlp_layers(build_model(ModelConfig(name="logistic"), info=info))[0].prefix == "1."
    assert mlp_layers(build_model(ModelConfig(name="cnn", width=4), info=info)) is None
    assert mlp_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))) is None
    assert mlp_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 4, bias=False))) is None


def _freeze_body(model):
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("3."))  # Sequential(Flatten, Linear, ReLU, Linear): the head trains


def test_frozen_layers_stay_frozen_and_match_vmap(digits):
    model_cfg, train_cfg = ModelConfig(name="mlp", hidden=(16,)), dataclasses.replace(BASE, weight_decay=1e-3)
    kernel = _train(digits, model_cfg, train_cfg, init_model=_freeze_body)
    vmap = _train(digits, model_cfg, train_cfg, init_model=_freeze_body, kernel=False)
    untrained = _train(digits, model_cfg, dataclasses.replace(train_cfg, lr=0.0))
    for trained, start in zip(kernel.state_dicts, untrained.state_dicts, strict=True):
        assert torch.equal(trained["1.weight"], start["1.weight"]) and torch.equal(trained["1.bias"], start["1.bias"])
        assert not torch.equal(trained["3.weight"], start["3.weight"])
    _assert_same_weights(kernel, vmap)


def test_a_half_frozen_linear_falls_back_to_vmap(digits):
    model = build_model(ModelConfig(name="mlp", hidden=(8,)), info=digits[0].info)
    params = {k: v.detach()[None] for k, v in model.named_parameters()}
    assert isinstance(ensemble_kernel(model, params, BASE), EnsembleMLP)
    model[1].weight.requires_grad_(False)
    assert ensemble_kernel(model, params, BASE) is None


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_flat_optimizer_equals_torch(optimizer):
    cfg = dataclasses.replace(BASE, optimizer=optimizer, lr=0.01, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(50, generator=gen, requires_grad=True)
    flat = reference.detach().clone()
    torch_opt, ours = make_optimizer([reference], cfg), FlatOptimizer(flat, cfg)
    for _ in range(5):
        grad = torch.randn(50, generator=gen)
        reference.grad = grad.clone()
        torch_opt.step()
        ours.step(grad.clone())
    torch.testing.assert_close(flat, reference.detach(), atol=1e-6, rtol=1e-5)
    assert not torch.equal(flat, torch.randn(50, generator=torch.Generator().manual_seed(0)))
