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


CL32, CL16, C32, C16 = ("channels-last 32-true", "channels-last bf16-mixed", "contiguous 32-true",
                        "contiguous bf16-mixed")


def never(*setting: str) -> float:
    raise AssertionError("measured although nothing needed measuring")


def timings(**seconds: float):
    """A fake measurement: seconds by setting, keyed like "cl32" (channels-last 32-true) or
    "c16" (contiguous bf16-mixed); the calls it had, as (memory_format, precision)."""
    calls = []

    def measure(memory_format: str, precision: str) -> float:
        calls.append((memory_format, precision))
        return seconds[{"channels_last": "cl", "contiguous": "c"}[memory_format] + {FP32: "32", BF16: "16"}[precision]]

    return measure, calls


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(fast_path, "bf16_is_native", lambda: True)


def test_configured_values_are_used_as_given(tmp_path, native_bf16):
    setting, measured = choose(BF16, "contiguous", "cpu", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format, setting.chosen, measured) == (BF16, "contiguous", "configured", False)
    setting, _ = choose("16-mixed", "auto", "cuda", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format) == ("16-mixed", "contiguous")
    # A precision the measurement does not run leaves the layout at its default, unmeasured.
    setting, _ = choose("bf16-true", "auto", "cpu", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format, setting.chosen) == ("bf16-true", "contiguous", "configured")
    assert not (tmp_path / "c.json").exists()


def test_auto_on_a_gpu_or_several_processes_is_fp32_contiguous_unmeasured(tmp_path, native_bf16):
    gpu, _ = choose("auto", "auto", "cuda", 1, never, tmp_path / "c.json", "k")
    assert (gpu.precision, gpu.memory_format, gpu.chosen) == (FP32, "contiguous", "cuda")
    ddp, measured = choose("auto", "auto", "cpu", 2, never, tmp_path / "c.json", "k")
    assert (ddp.precision, ddp.memory_format, ddp.chosen, measured) == (FP32, "contiguous", "several processes", False)
    given, _ = choose(BF16, "channels_last", "cpu", 2, never, tmp_path / "c.json", "k")
    assert (given.precision, given.memory_format, given.chosen) == (BF16, "channels_last", "configured")
    assert not (tmp_path / "c.json").exists()


def test_a_configured_memory_format_is_not_measured(tmp_path, native_bf16):
    measure, calls = timings(c32=2.0, c16=1.0)
    setting, measured = choose("auto", "contiguous", "cpu", 1, measure, tmp_path / "c.json", "k")
    assert calls == [("contiguous", FP32), ("contiguous", BF16)] and measured
    assert (setting.precision, setting.memory_format, setting.chosen) == (BF16, "contiguous", "measured")
    assert setting.seconds_per_step == {C32: 2.0, C16: 1.0}
    # With the layout free as well, that cached choice is not the answer: all four are measured.
    measure, calls = timings(cl32=3.0, cl16=0.5, c32=2.0, c16=1.0)
    setting, measured = choose("auto", "auto", "cpu", 1, measure, tmp_path / "c.json", "k")
    assert (setting.memory_format, setting.precision, measured, len(calls)) == ("channels_last", BF16, True, 4)


def test_a_configured_precision_measures_only_the_layout(tmp_path, native_bf16):
    measure, calls = timings(cl16=2.0, c16=1.0)
    setting, measured = choose(BF16, "auto", "cpu", 1, measure, tmp_path / "c.json", "k")
    assert calls == [("channels_last", BF16), ("contiguous", BF16)] and measured
    # "configured" (the precision) keeps a frozen run's head at the configured precision.
    assert (setting.precision, setting.memory_format, setting.chosen) == (BF16, "contiguous", "configured")
    assert setting.describe() == "contiguous (measured), bf16-mixed (configured)"


def test_without_native_bf16_only_the_layout_is_measured_in_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(fast_path, "bf16_is_native", lambda: False)
    setting, measured = choose("auto", "channels_last", "cpu", 1, never, tmp_path / "c.json", "k")
    assert (setting.precision, setting.memory_format, setting.chosen, measured) == (FP32, "channels_last", "no native bf16", False)
    measure, calls = timings(cl32=3.0, c32=1.0)
    setting, measured = choose("auto", "auto", "cpu", 1, measure, tmp_path / "c.json", "k")
    assert calls == [("channels_last", FP32), ("contiguous", FP32)] and measured
    assert (setting.precision, setting.memory_format, setting.chosen) == (FP32, "contiguous", "no native bf16")


def test_the_fastest_setting_wins_per_architecture_and_is_measured_once_per_machine(tmp_path, native_bf16,
                                                                                    monkeypatch):
    """Both "auto": the four settings are measured; contiguous wins for one architecture,
    channels-last for another, and each choice is kept and reused without measuring."""
    cache = tmp_path / "cache" / "fast_path.json"
    measure, calls = timings(cl32=2.0, cl16=1.5, c32=1.0, c16=3.0)
    resnet, measured = choose("auto", "auto", "cpu", 1, measure, cache, "resnet34/features")
    assert (resnet.memory_format, resnet.precision, resnet.chosen, measured) == ("contiguous", FP32, "measured", True)
    assert sorted(calls) == sorted((layout, p) for layout in ("channels_last", "contiguous") for p in (FP32, BF16))
    assert resnet.seconds_per_step == {CL32: 2.0, CL16: 1.5, C32: 1.0, C16: 3.0}
    vanilla, _ = choose("auto", "auto", "cpu", 1, timings(cl32=2.0, cl16=0.5, c32=1.0, c16=0.9)[0], cache,
                        "vanilla_cnn/training")
    assert (vanilla.memory_format, vanilla.precision) == ("channels_last", BF16)
    entries = json.loads(cache.read_text())[fast_path.machine_key()]
    assert sorted((e["memory_format"], e["precision"]) for e in entries.values()) == [("channels_last", BF16),
                                                                                      ("contiguous", FP32)]
    for key, setting in (("resnet34/features", resnet), ("vanilla_cnn/training", vanilla)):
        again, measured = choose("auto", "auto", "cpu", 1, never, cache, key)
        assert again == setting and not measured
    # Other candidates (only the layout free) are another measurement, not the cached choice.
    measure, calls = timings(cl16=1.0, c16=2.0)
    assert choose(BF16, "auto", "cpu", 1, measure, cache, "resnet34/features")[0].memory_format == "channels_last"
    assert calls
    monkeypatch.setattr(fast_path, "machine_key", lambda: "another machine")
    measure, calls = timings(cl32=1.0, cl16=3.0, c32=2.0, c16=3.0)
    assert choose("auto", "auto", "cpu", 1, measure, cache, "resnet34/features")[0].memory_format == "channels_last"
    assert calls


def test_stale_or_damaged_cache_entries_are_measured_again(tmp_path, native_bf16):
    cache = tmp_path / "fast_path.json"
    old = {"precision": BF16, "seconds_per_step": {FP32: 2.0, BF16: 1.0}}  # before the layout was measured
    misshapen = {"precision": "fp8"}  # under the key of today's four candidates
    cache.write_text(json.dumps({fast_path.machine_key(): {"k": old, f"k [{CL32}, {CL16}, {C32}, {C16}]": misshapen}}))
    measure, calls = timings(cl32=2.0, cl16=2.0, c32=1.0, c16=2.0)
    setting, measured = choose("auto", "auto", "cpu", 1, measure, cache, "k")
    assert (setting.memory_format, setting.precision, measured) == ("contiguous", FP32, True) and len(calls) == 4
    assert choose("auto", "auto", "cpu", 1, never, cache, "k")[0] == setting
    cache.write_text(json.dumps({fast_path.machine_key(): ["not", "a", "mapping"]}))
    assert choose("auto", "auto", "cpu", 1, measure, cache, "k")[1]
    cache.write_text("{ cut short")
    measure, _ = timings(cl32=1.0, cl16=0.1, c32=1.0, c16=1.0)
    assert choose("auto", "auto", "cpu", 1, measure, cache, "k")[0].precision == BF16


@pytest.mark.parametrize("kind", ["training", "features"])
@pytest.mark.parametrize("precision", [FP32, BF16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_seconds_per_step_runs_the_pass(kind, precision, channels_last):
    model = create("vanilla_cnn", 3, "none").model
    seconds = fast_path.seconds_per_step(model if kind == "training" else model.backbone, kind, 2, 32, 3,
                                         precision, channels_last=channels_last, steps=1)
    assert seconds > 0


def test_batches_arrive_in_the_chosen_memory_format():
    prep = Preprocessing(40, 32, (0.5,) * 3, (0.5,) * 3)
    batch = (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([0, 1]))
    for channels_last in (True, False):
        images = MonkeyDataModule([], [], prep, 2, 0, 10**6, channels_last=channels_last)
        x, _, _ = images.on_after_batch_transfer(batch, 0)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert torch.equal(x, prep.normalize(batch[0]))


def fake_seconds_per_step(**seconds: float):
    """A stand-in for fast_path.seconds_per_step: seconds by pass kind and setting name."""
    def measure(model, kind, batch_size, crop, num_classes, precision, channels_last=True, steps=2) -> float:
        layout = "channels_last" if channels_last else "contiguous"
        return seconds[f"{kind} {fast_path.setting_name(layout, precision)}"]

    return measure


def test_a_run_computes_with_the_chosen_setting_and_records_it(tmp_path, dataset, native_bf16, monkeypatch):
    """The (faked) measurement picks contiguous bf16 for vanilla_cnn's training and
    channels-last fp32 for resnet34's frozen feature pass: each run computes so, says so in
    metrics.json and its result line, and the choice is not part of the run's identity:
    without the measurement cache the finished run is still reused."""
    seen = []
    timed = {"training": {CL32: 2.0, CL16: 1.5, C32: 1.2, C16: 0.5},
             "features": {CL32: 0.3, CL16: 0.6, C32: 0.4, C16: 0.9}}
    monkeypatch.setattr(fast_path, "seconds_per_step", fake_seconds_per_step(
        **{f"{kind} {name}": s for kind, by in timed.items() for name, s in by.items()}))
    original = torch.nn.Conv2d.forward

    def spy(conv, x):
        seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                     x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)))
        return original(conv, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    config_path = write_config(tmp_path, [VANILLA, {"name": "frozen", "architecture": "resnet34", "frozen": True}],
                               dataset)
    config_path.write_text(config_path.read_text().replace("precision = '32-true'", "precision = 'auto'"))
    config = load_config(config_path)
    lines = []
    vanilla, frozen = train_all(config, show_progress=False, echo=lines.append)
    # vanilla_cnn's convolutions in bf16 on the default layout, resnet34's in fp32 on channels-last.
    vanilla_convs = [(nchw, nhwc) for dtype, nchw, nhwc in seen if dtype == torch.bfloat16]
    resnet_convs = [(nchw, nhwc) for dtype, nchw, nhwc in seen if dtype is None]
    assert vanilla_convs and all(nchw for nchw, _ in vanilla_convs) and not all(nhwc for _, nhwc in vanilla_convs)
    assert resnet_convs and all(nhwc for _, nhwc in resnet_convs) and not all(nchw for nchw, _ in resnet_convs)
    for result, kind, setting in ((vanilla, "training", ("contiguous", BF16)),
                                  (frozen, "features", ("channels_last", FP32))):
        compute = json.loads((result.run_dir / "metrics.json").read_text())["compute"]
        assert (compute["memory_format"], compute["precision"], compute["chosen"]) == (*setting, "measured")
        assert compute["seconds_per_step"] == timed[kind]
        (line,) = [line for line in lines if line.startswith(f"{result.name}:")]
        assert fast_path.setting_name(*setting) in line, line
    cache = CacheFiles(config.runs_dir).fast_path
    entries = json.loads(cache.read_text())[fast_path.machine_key()]
    assert {key.split(" [")[0]: (e["memory_format"], e["precision"]) for key, e in entries.items()} == {
        "vanilla_cnn/training/finetuned/b4/32px": ("contiguous", BF16),
        "resnet34/features/frozen/b4/32px": ("channels_last", FP32)}
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
    monkeypatch.setattr(fast_path, "seconds_per_step", fake_seconds_per_step(
        **{"training " + CL32: 1.0, "training " + CL16: 2.0, "training " + C32: 0.5, "training " + C16: 3.0}))
    config = load_config(write_config(tmp_path, [VANILLA], dataset))
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, precision="auto"))
    placement = resolve_placement(config)
    for _ in range(2):
        setting = compute_setting(config, config.experiments[0], 3, placement, announce=True)
    assert (setting.memory_format, setting.precision) == ("contiguous", FP32)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [("vanilla_cnn (training) on this CPU: channels-last 32-true 1.00 s, channels-last bf16-mixed "
                      "2.00 s, contiguous 32-true 0.50 s, contiguous bf16-mixed 3.00 s per step -> "
                      "contiguous, 32-true (measured)")]
