"""The CPU fast path: memory format and autocast precision of each run, chosen per machine.

On a CPU the speed of a network depends on its memory layout and on bf16 autocast, and
which setting is fastest depends on the network and on the processor. Measured with this
project's five architectures (benchmarks/results.md): bf16 autocast made most of them
1.5–5× faster on a Xeon with AMX and most of them slower on one without (AVX-512 BF16
alone), with exceptions both ways. Channels-last (NHWC) was faster than the default layout
for most of them, but not for all: in the plain step loop of that table the default
(contiguous) layout was the faster one for resnet34's frozen feature pass (7 % in fp32) and,
in bf16, for efficientnet_b0's fine-tuning. Neither choice holds everywhere, so both are
measured.

So, on a CPU and in one process, the "auto" values of `[trainer] precision` and
`memory_format` are measured together: a few training steps (or, for the frozen feature
pass, forward passes) of the architecture on random inputs of the run's shape, in every
combination of the free candidates, and the fastest wins. The layouts are channels-last
and contiguous; the precisions fp32 and bf16 autocast, bf16 only where the CPU has bf16
instructions (AVX-512 BF16 or AMX): elsewhere it is emulated and never wins. A configured
value is not measured, only the other one under it (the layout only under "32-true" or
"bf16-mixed", the precisions the measurement runs; under any other precision it is
contiguous). The result is kept per machine in `runs/cache/fast_path.json`, keyed by the
pass and its candidates, so each choice is measured once.

On a GPU, or with several processes (where every process must choose the same), "auto"
means what it always meant: "32-true" and the default (contiguous) layout, so a GPU user's
numbers do not change. A configured value other than "auto" is used as given, everywhere.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from monkeyreport import results
from monkeyreport.errors import MonkeyReportError

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
CHANNELS_LAST = "channels_last"
CONTIGUOUS = "contiguous"
LAYOUTS = (CHANNELS_LAST, CONTIGUOUS)  # in this order: a tie goes to channels-last
Pass = Literal["training", "features"]  # a training step of the model, or a backbone forward


@dataclass(frozen=True)
class ComputeSetting:
    """How one pass of a run computes; recorded in metrics.json as `compute`."""

    precision: str  # a Lightning precision value
    memory_format: str  # "channels_last" or "contiguous"
    # How the precision was chosen: "configured", "measured", "no native bf16", "several
    # processes" or the GPU type; an "auto" layout measured under it shows in seconds_per_step.
    chosen: str
    seconds_per_step: dict[str, float] = field(default_factory=dict)  # by setting_name, measured

    @property
    def channels_last(self) -> bool:
        return self.memory_format == CHANNELS_LAST

    def describe(self) -> str:
        """One phrase for the console: "channels-last, bf16-mixed (measured)", or with only
        the layout measured "contiguous (measured), bf16-mixed (configured)"."""
        layout = "channels-last" if self.channels_last else "contiguous"
        if self.seconds_per_step and self.chosen != "measured":
            layout += " (measured)"
        return f"{layout}, {self.precision} ({self.chosen})"

    def to_record(self) -> dict[str, object]:
        return asdict(self)


def setting_name(memory_format: str, precision: str) -> str:
    """A setting in the words of result lines and benchmarks: "channels-last bf16-mixed"."""
    return f"{memory_format.replace('_', '-')} {precision}"


def bf16_is_native() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def machine_key() -> str:
    """What a measurement depends on besides the model: processor, cores, torch build."""
    return "|".join([cpu_model(), str(os.cpu_count()), str(torch.get_num_threads()), torch.__version__])


def cpu_model() -> str:
    """The processor's name, as /proc/cpuinfo gives it where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def choose(precision: str, memory_format: str, device_type: str, world_size: int,
           measure: Callable[[str, str], float], cache: Path, key: str) -> tuple[ComputeSetting, bool]:
    """The setting of one pass, and whether it was measured just now (so worth saying).

    `precision` and `memory_format` are the configured values; `measure(memory_format,
    precision)` gives seconds per step of the pass in that setting; `key` names the pass
    (architecture, kind, shape) in the machine's entry of `cache`.
    """
    if device_type != "cpu" or world_size > 1:
        unmeasured = device_type if device_type != "cpu" else "several processes"
        return ComputeSetting(FP32 if precision == AUTO else precision,
                              CONTIGUOUS if memory_format == AUTO else memory_format,
                              unmeasured if precision == AUTO else "configured"), False
    if precision != AUTO:
        precisions, chosen = (precision,), "configured"
    elif bf16_is_native():
        precisions, chosen = (FP32, BF16), "measured"
    else:
        precisions, chosen = (FP32,), "no native bf16"
    if memory_format != AUTO:
        layouts: tuple[str, ...] = (memory_format,)
    else:
        layouts = LAYOUTS if precisions[0] in (FP32, BF16) else (CONTIGUOUS,)
    candidates = [(layout, p) for layout in layouts for p in precisions]
    if len(candidates) == 1:
        return ComputeSetting(precisions[0], layouts[0], chosen), False
    # The candidates are part of the key: a pass measured over other ones is measured again.
    key = f"{key} [{', '.join(setting_name(*c) for c in candidates)}]"
    known = _recorded(cache, key, candidates)
    if known:
        return ComputeSetting(known["precision"], known["memory_format"], chosen, known["seconds_per_step"]), False
    seconds = {setting_name(*c): round(measure(*c), 4) for c in candidates}
    layout, fastest = min(candidates, key=lambda c: seconds[setting_name(*c)])
    _remember(cache, key, {"memory_format": layout, "precision": fastest, "seconds_per_step": seconds})
    return ComputeSetting(fastest, layout, chosen, seconds), True


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = results.read_json_if_exists(path)
    except (OSError, MonkeyReportError):  # a damaged cache is measured again, not an error
        return {}
    return data if isinstance(data, dict) else {}


def _recorded(path: Path, key: str, candidates: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The cached choice of `key` on this machine, or None where there is none (or one that
    does not fit the candidates: measured again, not an error)."""
    machine = _read_cache(path).get(machine_key())
    entry = machine.get(key) if isinstance(machine, dict) else None
    if (isinstance(entry, dict) and (entry.get("memory_format"), entry.get("precision")) in candidates
            and isinstance(entry.get("seconds_per_step"), dict)):
        return entry
    return None


def _remember(path: Path, key: str, entry: dict[str, object]) -> None:
    data = _read_cache(path)
    if not isinstance(data.get(machine_key()), dict):
        data[machine_key()] = {}
    data[machine_key()][key] = entry
    results.write_json(path, data)


def pass_key(architecture: str, kind: Pass, frozen: bool, batch_size: int, crop: int) -> str:
    return f"{architecture}/{kind}/{'frozen' if frozen else 'finetuned'}/b{batch_size}/{crop}px"


def seconds_per_step(model: nn.Module, kind: Pass, batch_size: int, crop: int, num_classes: int,
                     precision: str, channels_last: bool = True, steps: int = 2) -> float:
    """Mean seconds of `steps` passes after one warm-up, on random inputs: a training step
    (forward, cross-entropy, backward, Adam) or an inference forward of `model`, which is
    changed by the training steps, so pass a throwaway model."""
    x = torch.randn(batch_size, 3, crop, crop)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == BF16)
    if kind == "training":
        y = torch.randint(0, num_classes, (batch_size,))
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model.train()

        def step() -> None:
            with autocast:
                loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                model(x)
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps
