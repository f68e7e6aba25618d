"""What each architecture is, as plain data: the registry's facts, without torch.

Like timm's `pretrained_cfg`, a model describes itself here: its names, its role in the
report, its head, the normalisation and input size it expects and its Grad-CAM layer.
models.py registers a backbone builder against these facts; the statistics, the context
and render read them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from monkeyreport.errors import MonkeyReportError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchitectureFacts:
    """One architecture's facts. `role` says how the report treats it: the baseline trained
    from scratch, or a transfer-learning model with frozen and fine-tuned variants."""

    name: str
    title: str  # as printed in the report
    family: str  # the report's section on it: "baseline", "alexnet", "resnet", "efficientnet"
    library: str  # where the backbone comes from: "own", "torchvision", "timm"
    role: Literal["baseline", "transfer"]
    head_hidden: int
    grad_cam_layer: str  # submodule path of `model.backbone`, for nn.Module.get_submodule
    grad_cam_label: str  # that layer as the report names it
    head_dropout: float = 0.0
    # Normalisation of the default (ImageNet or random) weights; packaged weights bring their own.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)  # channels, height, width of the centre crop
    resize: int = 256  # shorter side before the centre crop


_FACTS = (
    ArchitectureFacts("vanilla_cnn", "VanillaCNN", "baseline", "own", "baseline", head_hidden=256,
                      grad_cam_layer="6", grad_cam_label="backbone[6]"),
    ArchitectureFacts("alexnet", "AlexNet", "alexnet", "torchvision", "transfer", head_hidden=1024,
                      head_dropout=0.4, grad_cam_layer="0.10", grad_cam_label="features[10]"),
    ArchitectureFacts("resnet34", "ResNet34", "resnet", "timm", "transfer", head_hidden=256,
                      grad_cam_layer="layer4", grad_cam_label="layer4"),
    ArchitectureFacts("efficientnet_b0", "EfficientNetB0", "efficientnet", "timm", "transfer", head_hidden=512,
                      grad_cam_layer="conv_head", grad_cam_label="conv_head"),
    ArchitectureFacts("efficientnet_lite0", "EfficientNet-Lite0", "efficientnet", "timm", "transfer",
                      head_hidden=512, grad_cam_layer="conv_head", grad_cam_label="conv_head"),
)
ARCHITECTURES: dict[str, ArchitectureFacts] = {f.name: f for f in _FACTS}


def facts(name: str) -> ArchitectureFacts:
    """The facts of a known architecture; a one-line error naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise MonkeyReportError(
            f"unknown architecture '{name}' (known: {', '.join(ARCHITECTURES)})"
        ) from None
