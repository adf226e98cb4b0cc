"""Model registry: `build_model(cfg, info=...)` maps float32[B, *info.shape] -> logits float32[B, C].

Every model here is batch-independent and buffer-free (no BatchNorm, no running statistics), so a
group of independently initialized copies trains as ONE ensemble: parameters stacked with
`torch.func.stack_module_state`, forward by `torch.vmap(functional_call, randomness="different")`
(each copy draws its own dropout masks). `vmappable` tells the trainer when it must fall back to
one model at a time (e.g. for a user-registered model with BatchNorm).

Initialization draws from torch's global RNG only: the trainer calls ``torch.manual_seed`` with the
model's seed before `build_model`, which makes the weights a pure function of (run seed, model_id).

==========  ==================================================================  ===========
name        architecture                                                        data
==========  ==================================================================  ===========
logistic    flatten, linear                                                     any
mlp         flatten, [linear(h), ReLU, dropout] per ``cfg.hidden``, linear head   any
cnn         2 x [conv3x3(width, 2*width), ReLU, maxpool2], global avg pool,     image
            dropout, linear
resnet18    torchvision ResNet-18, GroupNorm instead of BatchNorm, 3x3 stride-1   image
            stem without max-pool (small images); ``cfg.width`` is ignored
==========  ==================================================================  ===========
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from farm.config import ModelConfig
from farm.data import DatasetInfo
from farm.errors import ConfigError, unknown_name


def _features(info: DatasetInfo) -> int:
    return math.prod(info.shape)


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def _require_image(cfg: ModelConfig, info: DatasetInfo) -> None:
    if info.kind != "image" or len(info.shape) != 3:
        raise ConfigError(f"model {cfg.name!r} needs image data; {info.name!r} is {info.kind}")


def _logistic(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_features(info), info.num_classes))


def _mlp(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = _features(info)
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), *_dropout(cfg.dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, info.num_classes))


def _cnn(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    _require_image(cfg, info)
    channels, width = info.shape[0], cfg.width

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        # ceil_mode keeps odd and tiny maps (e.g. 7x7 after one block on 28x28, or 2x2) non-empty.
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]

    return nn.Sequential(
        *block(channels, width), *block(width, 2 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), *_dropout(cfg.dropout),
        nn.Linear(2 * width, info.num_classes),
    )


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels), channels)


def _resnet18(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    _require_image(cfg, info)
    from torchvision.models import resnet18  # on first use: torchvision is slow to import (farm.queries._rotate)

    model = resnet18(num_classes=info.num_classes, norm_layer=_group_norm)
    # Small inputs (8x8 .. 32x32): the ImageNet stem (7x7 stride 2 + max-pool) would discard most
    # of the image, so use the usual CIFAR stem, initialized like torchvision's convolutions.
    model.conv1 = nn.Conv2d(info.shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


MODELS: dict[str, Callable[[ModelConfig, DatasetInfo], nn.Module]] = {
    "logistic": _logistic,
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
}

_IMAGE_ONLY = ("cnn", "resnet18")


def check_model(cfg: ModelConfig, *, info: DatasetInfo) -> None:
    """Raise `ConfigError` if `cfg.name` is unknown or does not apply to `info`; builds nothing."""
    if cfg.name not in MODELS:
        raise unknown_name("model", cfg.name, MODELS)
    if cfg.name in _IMAGE_ONLY:
        _require_image(cfg, info)


def build_model(cfg: ModelConfig, *, info: DatasetInfo) -> nn.Module:
    """A freshly initialized model for `info`: float32[B, *info.shape] -> logits float32[B, C].

    Deterministic given torch's global RNG state (seed it with ``torch.manual_seed`` first).
    Raises `ConfigError` for an unknown name or a model that needs image data on tabular data.
    """
    check_model(cfg, info=info)
    return MODELS[cfg.name](cfg, info)


def vmappable(model: nn.Module) -> bool:
    """True if copies of `model` can train as one `torch.vmap` ensemble.

    That needs a model whose forward pass updates no state: no BatchNorm (running statistics and
    batch coupling) and, conservatively, no buffers at all, since `functional_call` under vmap
    cannot write a buffer back. Every model of `MODELS` qualifies.
    """
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    return next(model.buffers(), None) is None


def head_parameters(model: nn.Module) -> list[str]:
    """Names of the head's parameters: those of the last module (in `named_modules` order) that holds any.

    The head of every model of `MODELS` is its final linear layer (``fc`` for resnet18); transfer learning
    (`farm.teacher`) draws it fresh and copies every other parameter, the body, from the teacher.
    """
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    if not owners:
        return []
    prefix = f"{owners[-1]}." if owners[-1] else ""
    return [f"{prefix}{name}" for name, _ in model.get_submodule(owners[-1]).named_parameters(recurse=False)]
