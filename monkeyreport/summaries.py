"""Architecture summaries for the diagrams of the report: report/models/<architecture>.json.

Each summary comes from the instantiated model (random weights: shapes do not depend on
them): one forward pass of a 1x3x224x224 dummy input with hooks on the top-level stages
of the backbone and the head, recording each stage's output shape and parameter count.
`render` reads these JSON files and never imports torch itself.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from monkeyreport import results
from monkeyreport.config import Config
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.models import count_parameters, create, get_architecture

# Layers folded into the stage before them, so a diagram shows "Conv2d + ReLU" as one box.
_FOLDED = (nn.ReLU, nn.SiLU, nn.GELU, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's summaries stage: one summary per configured architecture."""
    start = time.perf_counter()
    report = results.ReportFiles(config.report_dir)
    architectures = list(dict.fromkeys(e.architecture for e in config.experiments))
    for architecture in architectures:
        summarize_architecture(architecture).write(report.model_summary(architecture))
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


def summarize_architecture(architecture: str, num_classes: int = 10) -> results.ModelSummary:
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
    return results.ModelSummary(architecture=architecture, title=arch.title, family=arch.family,
                                library=arch.library, input_shape=list(arch.input_size), params_total=total,
                                stages=[results.ModelStage(**row) for row in rows])
