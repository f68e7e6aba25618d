"""The CPU fast path: what `[trainer] precision/memory_format = "auto"` choose, and that the
chosen setting is what the run computes with and records."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from monkeyreport import fast_path
from monkeyreport.config import load_config
from monkeyreport.datamodule import MonkeyDataModule, Preprocessing
from monkeyreport.fast_path import BF16, FP32, choose
from monkeyreport.models import create
from monkeyreport.placement import compute_setting, resolve_placement
from monkeyreport.results import CacheFiles
from monkeyreport.training import train_all

from test_training import VANILLA, dataset, write_config  # noqa: F401 (fixture)


def never(precision: str) -> float:
    raise AssertionError("measured although nothing needed measuring")


def timings(**seconds: float):
    calls = []

    def measure(precision: str) -> float:
        calls.append(precision)
        return seconds[{FP32: "fp32", BF16: "bf16"}[precision]]

    return measure, calls


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(fast_path, "bf16_is_native", lambda: True)


def test_configured_values_are_used_as_given(tmp_path):
    setting, measured = choose(BF16, "contiguous", "cpu", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format, setting.chosen, measured) == (BF16, "contiguous", "configured", False)
    setting, _ = choose("16-mixed", "auto", "cuda", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format) == ("16-mixed", "contiguous")


def test_auto_on_a_gpu_or_several_processes_is_fp32_unmeasured(tmp_path, native_bf16):
    gpu, _ = choose("auto", "auto", "cuda", 1, never, tmp_path / "c.json", "k")
    assert (gpu.precision, gpu.memory_format, gpu.chosen) == (FP32, "contiguous", "cuda")
    ddp, _ = choose("auto", "auto", "cpu", 2, never, tmp_path / "c.json", "k")
    assert (ddp.precision, ddp.memory_format, ddp.chosen) == (FP32, "channels_last", "several processes")


def test_without_native_bf16_fp32_is_used_unmeasured(tmp_path, monkeypatch):
    monkeypatch.setattr(fast_path, "bf16_is_native", lambda: False)
    setting, measured = choose("auto", "auto", "cpu", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format, setting.chosen, measured) == (FP32, "channels_last", "no native bf16", False)


def test_the_faster_precision_wins_and_is_measured_once_per_machine(tmp_path, native_bf16, monkeypatch):
    cache = tmp_path / "cache" / "fast_path.json"
    measure, calls = timings(fp32=2.0, bf16=0.5)
    setting, measured = choose("auto", "auto", "cpu", 1, measure, cache, "resnet34/training")
    assert (setting.precision, setting.chosen, measured) == (BF16, "measured", True)
    assert setting.seconds_per_step == {FP32: 2.0, BF16: 0.5} and sorted(calls) == sorted([FP32, BF16])
    again, measured = choose("auto", "auto", "cpu", 1, never, cache, "resnet34/training")
    assert again == setting and not measured
    slower, _ = choose("auto", "auto", "cpu", 1, timings(fp32=1.0, bf16=3.0)[0], cache, "vanilla_cnn/training")
    assert slower.precision == FP32
    monkeypatch.setattr(fast_path, "machine_key", lambda: "another machine")
    measure, calls = timings(fp32=1.0, bf16=3.0)
    assert choose("auto", "auto", "cpu", 1, measure, cache, "resnet34/training")[0].precision == FP32 and calls
    cache.write_text("{ cut short")
    assert choose("auto", "auto", "cpu", 1, timings(fp32=1.0, bf16=0.1)[0], cache, "k")[0].precision == BF16


@pytest.mark.parametrize("kind", ["training", "features"])
@pytest.mark.parametrize("precision", [FP32, BF16])
def test_seconds_per_step_runs_the_pass(kind, precision):
    model = create("vanilla_cnn", 3, "none").model
    seconds = fast_path.seconds_per_step(model if kind == "training" else model.backbone, kind, 2, 32, 3,
                                         precision, steps=1)
    assert seconds > 0


def test_batches_arrive_in_the_chosen_memory_format():
    prep = Preprocessing(40, 32, (0.5,) * 3, (0.5,) * 3)
    batch = (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([0, 1]))
    for channels_last in (True, False):
        images = MonkeyDataModule([], [], prep, 2, 0, 10**6, channels_last=channels_last)
        x, _, _ = images.on_after_batch_transfer(batch, 0)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert torch.equal(x, prep.normalize(batch[0]))


def test_a_run_computes_with_the_chosen_setting_and_records_it(tmp_path, dataset, native_bf16, monkeypatch):
    """bf16 wins the (faked) measurement: the run trains under bf16 autocast in channels-last,
    says so in metrics.json and its result line, and the choice is not part of the run's
    identity: without the measurement cache the finished run is still reused."""
    seen = []
    monkeypatch.setattr(fast_path, "seconds_per_step",
                        lambda *a, **k: {FP32: 1.0, BF16: 0.5}[a[5]])
    original = torch.nn.Conv2d.forward

    def spy(conv, x):
        seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                     x.is_contiguous(memory_format=torch.channels_last)))
        return original(conv, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    config_path = write_config(tmp_path, [VANILLA, {"name": "frozen", "architecture": "resnet34", "frozen": True}],
                               dataset)
    config_path.write_text(config_path.read_text().replace("precision = '32-true'", "precision = 'auto'"))
    config = load_config(config_path)
    lines = []
    vanilla, frozen = train_all(config, show_progress=False, echo=lines.append)
    assert seen and all(dtype == torch.bfloat16 and channels_last for dtype, channels_last in seen)
    for result in (vanilla, frozen):
        compute = json.loads((result.run_dir / "metrics.json").read_text())["compute"]
        assert (compute["precision"], compute["memory_format"], compute["chosen"]) == (BF16, "channels_last", "measured")
        assert compute["seconds_per_step"] == {FP32: 1.0, BF16: 0.5}
    assert all("channels-last bf16-mixed" in line for line in lines), lines
    cache = CacheFiles(config.runs_dir).fast_path
    entries = json.loads(cache.read_text())[fast_path.machine_key()]
    assert set(entries) == {"vanilla_cnn/training/finetuned/b4/32px", "resnet34/features/frozen/b4/32px"}
    cache.unlink()
    monkeypatch.setattr(fast_path, "seconds_per_step", never)
    assert all(r.skipped for r in train_all(config, show_progress=False))


def test_bf16_training_gives_sound_probabilities(tmp_path, dataset):
    path = write_config(tmp_path, [VANILLA], dataset)
    path.write_text(path.read_text().replace("precision = '32-true'", "precision = 'bf16-mixed'"))
    (result,) = train_all(load_config(path), show_progress=False)
    assert result.metrics["compute"]["precision"] == BF16
    rows = (result.run_dir / "predictions.csv").read_text().splitlines()[1:]
    for row in rows:
        probabilities = [float(v) for v in row.split(",")[3:]]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)


def test_a_choice_measured_now_is_printed_once(tmp_path, dataset, native_bf16, monkeypatch, capsys):
    monkeypatch.setattr(fast_path, "seconds_per_step", lambda *a, **k: {FP32: 1.0, BF16: 2.0}[a[5]])
    config = load_config(write_config(tmp_path, [VANILLA], dataset))
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, precision="auto"))
    placement = resolve_placement(config)
    for _ in range(2):
        setting = compute_setting(config, config.experiments[0], 3, placement, announce=True)
    assert setting.precision == FP32
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["vanilla_cnn (training) on this CPU: 32-true 1.00 s, bf16-mixed 2.00 s per step -> "
                     "channels-last, 32-true (measured)"]
