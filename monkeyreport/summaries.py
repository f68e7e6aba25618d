"""Architecture summaries for the diagrams and the efficiency of the report:
report/models/<architecture>.json.

Each summary comes from the instantiated model (random weights: shapes and costs do not
depend on them): one forward pass of a 1x3x224x224 dummy input with hooks on the top-level
stages of the backbone and the head, recording each stage's output shape and parameter
count; the parameters of backbone and head, and what a frozen and a fine-tuned variant
train; the FLOPs of one image at the configured crop (torch.utils.flop_counter) and the
measured CPU latency per image at batch sizes 1 and 32 (eval mode, fp32, inference_mode).
`render` reads these JSON files and never imports torch itself.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monkeyreport import results
from monkeyreport.config import Config
from monkeyreport.fast_path import cpu_model
from monkeyreport.models import count_parameters, create, get_architecture
from monkeyreport.pipeline import Options, StageOutcome, timed

# Layers folded into the stage before them, so a diagram shows "Conv2d + ReLU" as one box.
_FOLDED = (nn.ReLU, nn.SiLU, nn.GELU, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's summaries stage: one summary per configured architecture."""
    start = time.perf_counter()
    report = results.ReportFiles(config.report_dir)
    # The crop of each architecture's first experiment (a recipe may set its own).
    crops = {e.architecture: config.recipe(e).crop for e in reversed(config.experiments)}
    architectures = list(dict.fromkeys(e.architecture for e in config.experiments))
    for architecture in architectures:
        summarize_architecture(architecture, crop=crops[architecture]).write(report.model_summary(architecture))
    return StageOutcome(f"summaries {timed(start)}: {', '.join(architectures) or 'none'} -> {report.models_dir}")


def _stages(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(group, name, module) of the top-level stages of backbone and head."""
    backbone, head = model.backbone, model.head
    stages: list[tuple[str, str, nn.Module]] = []
    for name, child in backbone.named_children():
        expand = name == "blocks" or (isinstance(backbone, nn.Sequential) and isinstance(child, nn.Sequential))
        if expand:
            stages += [("backbone", f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            stages.append(("backbone", name, child))
    stages += [("head", f"head.{n}", c) for n, c in head.named_children()]
    return stages


# (batch size, warm-up passes, timed passes) of the latency measurement.
LATENCY_PASSES = ((1, 3, 10), (32, 1, 3))


def flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """FLOPs of one image through `model` (a backbone + head Classifier): total, backbone, head."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    per_module = counter.get_flop_counts()
    name = type(model).__name__

    def of(part: str) -> int:
        return int(sum(per_module.get(f"{name}.{part}", {}).values()))

    return int(counter.get_total_flops()), of("backbone"), of("head")


def latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, warmup: int, repeats: int
            ) -> results.Latency:
    """Median milliseconds per image of `repeats` timed eval-mode passes of one batch on the CPU."""
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return results.Latency(batch, 1000 * statistics.median(times) / batch, repeats)


def efficiency(model: nn.Module, input_shape: tuple[int, ...]) -> results.ModelEfficiency:
    model = model.eval()
    total, backbone, head = flops(model, input_shape)
    return results.ModelEfficiency(
        input_shape=list(input_shape), flops=total, flops_backbone=backbone, flops_head=head,
        latency=[latency(model, input_shape, *passes) for passes in LATENCY_PASSES],
        cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__)


def summarize_architecture(architecture: str, num_classes: int = 10, crop: int | None = None) -> results.ModelSummary:
    """The summary of `architecture`: diagram stages at its default input size, efficiency at
    `crop` (its default input size when None)."""
    arch = get_architecture(architecture)
    model = create(architecture, num_classes, "none", frozen=False).model.eval()
    stages = _stages(model)
    shapes: dict[int, list[int]] = {}
    handles = []
    for i, (_, _, module) in enumerate(stages):
        def hook(_m: nn.Module, _inp: Any, out: Any, i: int = i) -> None:
            if isinstance(out, torch.Tensor):
                shapes[i] = list(out.shape[1:])
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *arch.input_size))
    finally:
        for h in handles:
            h.remove()

    rows: list[dict[str, Any]] = []
    for i, (group, name, module) in enumerate(stages):
        if i not in shapes:
            continue
        params = sum(p.numel() for p in module.parameters())
        kind = type(module).__name__
        if isinstance(module, nn.Sequential) and len(module):
            kind = f"{len(module)} × {type(module[0]).__name__}"
        folded = isinstance(module, _FOLDED) or kind.startswith("BatchNorm")
        if folded and rows and rows[-1]["group"] == group:
            if not isinstance(module, nn.Identity):
                rows[-1]["layer"] += f" + {kind}"
            rows[-1]["params"] += params
            rows[-1]["output_shape"] = shapes[i]
            continue
        if isinstance(module, nn.Identity):
            continue
        rows.append({"group": group, "name": name, "layer": kind, "output_shape": shapes[i],
                     "params": params})
    total, _ = count_parameters(model)
    _, trainable_frozen = count_parameters(create(architecture, num_classes, "none", frozen=True).model)
    size = arch.input_size if crop is None else (arch.input_size[0], crop, crop)
    return results.ModelSummary(architecture=architecture, title=arch.title, family=arch.family,
                                library=arch.library, input_shape=list(arch.input_size), params_total=total,
                                stages=[results.ModelStage(**row) for row in rows],
                                params_backbone=count_parameters(model.backbone)[0],
                                params_head=count_parameters(model.head)[0],
                                params_trainable_frozen=trainable_frozen,
                                params_trainable_finetuned=count_parameters(model)[1],
                                efficiency=efficiency(model, size))
