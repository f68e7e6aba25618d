"""The CPU fast path: memory format and autocast precision of each run, chosen per machine.

On a CPU the speed of a network depends on its memory layout and on bf16 autocast, and
which setting is fastest depends on the network and on the processor. Measured with this
project's five architectures (benchmarks/results.md): channels-last (NHWC) was faster than
the default layout for nearly every one of them, in training and in inference, in fp32 and
in bf16, on a Xeon with AMX and on one without (the exceptions were within measurement
noise); bf16 autocast made most of them 1.5–5× faster
with AMX and most of them slower without it (AVX-512 BF16 alone), with exceptions both ways.

So, on a CPU and in one process:
- `[trainer] memory_format = "auto"` is channels-last;
- `[trainer] precision = "auto"` is measured: a few training steps (or, for the frozen
  feature pass, forward passes) of the architecture on random inputs of the run's shape,
  in fp32 and in bf16 autocast, and the faster wins. bf16 is a candidate only where the CPU
  has bf16 instructions (AVX-512 BF16 or AMX); elsewhere it is emulated and never wins. The
  result is kept per machine in `runs/cache/fast_path.json`, so each choice is measured once.

On a GPU, or with several processes (where every process must choose the same), "auto"
means what it always meant: "32-true" and the default layout, so a GPU user's numbers do not
change. A configured value other than "auto" is used as given, everywhere.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from monkeyreport import results
from monkeyreport.errors import MonkeyReportError

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
Pass = Literal["training", "features"]  # a training step of the model, or a backbone forward


@dataclass(frozen=True)
class ComputeSetting:
    """How one pass of a run computes; recorded in metrics.json as `compute`."""

    precision: str  # a Lightning precision value
    memory_format: str  # "channels_last" or "contiguous"
    chosen: str  # "configured", "measured", "no native bf16", "gpu", "several processes"
    seconds_per_step: dict[str, float] = field(default_factory=dict)  # measured candidates

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def describe(self) -> str:
        """One phrase for the console: "channels-last, bf16-mixed (measured)"."""
        layout = "channels-last" if self.channels_last else "contiguous"
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
           measure: Callable[[str], float], cache: Path, key: str) -> tuple[ComputeSetting, bool]:
    """The setting of one pass, and whether it was measured just now (so worth saying).

    `precision` and `memory_format` are the configured values; `measure(precision)` gives
    seconds per step of the pass with channels-last in that precision; `key` names the pass
    (architecture, kind, shape) in the machine's entry of `cache`.
    """
    if memory_format == AUTO:
        memory_format = "channels_last" if device_type == "cpu" else "contiguous"
    if precision != AUTO:
        return ComputeSetting(precision, memory_format, "configured"), False
    if device_type != "cpu":
        return ComputeSetting(FP32, memory_format, device_type), False
    if world_size > 1:
        return ComputeSetting(FP32, memory_format, "several processes"), False
    if not bf16_is_native():
        return ComputeSetting(FP32, memory_format, "no native bf16"), False
    known = _read_cache(cache).get(machine_key(), {}).get(key)
    if known:
        return ComputeSetting(known["precision"], memory_format, "measured", known["seconds_per_step"]), False
    seconds = {candidate: round(measure(candidate), 4) for candidate in (FP32, BF16)}
    fastest = min(seconds, key=seconds.__getitem__)
    _remember(cache, key, {"precision": fastest, "seconds_per_step": seconds})
    return ComputeSetting(fastest, memory_format, "measured", seconds), True


def _read_cache(path: Path) -> dict[str, dict[str, dict]]:
    try:
        data = results.read_json_if_exists(path)
    except (OSError, MonkeyReportError):  # a damaged cache is measured again, not an error
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: Path, key: str, entry: dict[str, object]) -> None:
    data = _read_cache(path)
    data.setdefault(machine_key(), {})[key] = entry
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
