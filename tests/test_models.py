"""Model registry: shapes, determinism, no BatchNorm, and vmapped ensembles equal single models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state

from farm.config import ModelConfig
from farm.data import DatasetInfo
from farm.errors import ConfigError
from farm.models import MODELS, build_model, check_model, vmappable

DIGITS = DatasetInfo("digits", "image", (1, 8, 8), 10)
MNIST = DatasetInfo("mnist", "image", (1, 28, 28), 10)
CIFAR = DatasetInfo("cifar10", "image", (3, 32, 32), 10)
ADULT = DatasetInfo("adult", "tabular", (14,), 2, binary_features=(False,) * 6 + (True,) * 8)

SMALL = {  # fast settings per model
    "logistic": ModelConfig("logistic"),
    "mlp": ModelConfig("mlp", hidden=(16, 8), dropout=0.2),
    "cnn": ModelConfig("cnn", width=4, dropout=0.2),
    "resnet18": ModelConfig("resnet18"),
}
CASES = [(name, info) for name in SMALL for info in (DIGITS, MNIST, CIFAR, ADULT)
         if not (name in ("cnn", "resnet18") and info.kind != "image")
         and not (name == "resnet18" and info in (MNIST, CIFAR))]  # resnet18: one tiny case suffices


def inputs(info: DatasetInfo, n: int = 2) -> torch.Tensor:
    return torch.rand((n, *info.shape), generator=torch.Generator().manual_seed(0))


def build(name: str, info: DatasetInfo, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(SMALL[name], info=info)


@pytest.mark.parametrize(("name", "info"), CASES)
def test_logits_shape_and_dtype(name, info):
    logits = build(name, info).eval()(inputs(info))
    assert logits.shape == (2, info.num_classes) and logits.dtype == torch.float32


@pytest.mark.parametrize("info", [MNIST, CIFAR])
def test_resnet18_on_larger_images(info):
    torch.manual_seed(0)
    model = build_model(SMALL["resnet18"], info=info).eval()
    assert model.conv1.in_channels == info.shape[0]
    with torch.no_grad():
        assert model(inputs(info, n=1)).shape == (1, 10)


@pytest.mark.parametrize(("name", "info"), CASES)
def test_initialization_follows_the_global_rng(name, info):
    a, b, c = build(name, info, 0), build(name, info, 0), build(name, info, 1)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize(("name", "info"), CASES)
def test_vmapped_ensemble_matches_each_model(name, info):
    models = [build(name, info, seed).eval() for seed in range(3)]
    assert all(vmappable(m) for m in models)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = inputs(info)

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    with torch.no_grad():
        stacked = torch.vmap(forward, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        for i, model in enumerate(models):
            assert torch.allclose(stacked[i], model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "info"), [("mlp", ADULT), ("cnn", DIGITS), ("resnet18", DIGITS)])
def test_vmapped_training_step_in_train_mode(name, info):
    models = [build(name, info, seed).train() for seed in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x, y = inputs(info), torch.tensor([0, 1])

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads = torch.vmap(grad(loss), in_dims=(0, 0, None, None), randomness="different")(params, buffers, x, y)
    assert set(grads) == set(params)
    assert all(g.shape == params[k].shape and torch.isfinite(g).all() for k, g in grads.items())


def test_resnet18_has_group_norm_and_small_stem():
    model = build("resnet18", DIGITS)
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert next(model.buffers(), None) is None


def test_mlp_layers_follow_the_config():
    model = build_model(ModelConfig("mlp", hidden=(16, 8), dropout=0.0), info=ADULT)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(14, 16), (16, 8), (8, 2)]
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert sum(isinstance(m, nn.Dropout) for m in build("mlp", ADULT).modules()) == 2


def test_vmappable_rejects_batch_norm_and_buffers():
    assert not vmappable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    assert not vmappable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)))
    with_buffer = nn.Linear(2, 2)
    with_buffer.register_buffer("count", torch.zeros(()))
    assert not vmappable(with_buffer)


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_image_models_on_tabular_data_are_config_errors(name):
    message = f"model '{name}' needs image data; 'adult' is tabular"
    with pytest.raises(ConfigError, match=message):
        build_model(ModelConfig(name), info=ADULT)
    with pytest.raises(ConfigError, match=message):
        check_model(ModelConfig(name), info=ADULT)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg' \(valid: cnn, logistic, mlp, resnet18\)"):
        build_model(ModelConfig("vgg"), info=DIGITS)
    assert set(MODELS) == {"logistic", "mlp", "cnn", "resnet18"}
