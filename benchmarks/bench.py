"""`make bench`: for each experiment, the plain path, the optimised path and the compute floor.

- plain: decode every JPEG every epoch, run the whole network every epoch
  (training.image_cache = feature_cache = false);
- optimised: the default path (decoded-image cache built cold, frozen-feature cache);
- floor: the arithmetic alone, on synthetic tensors of the same shapes on the same device:
  frozen, one backbone forward over training + validation images; fine-tuned, one epoch of
  forward + backward + Adam step over the training images and a forward over validation.

Frozen experiments are compared on total time, fine-tuned ones on time per epoch (the
mean of the `seconds` column of history.csv). Results go to stdout and benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from monkeyreport import results
from monkeyreport.config import Config, ExperimentConfig, data_dir_override, load_config, resolve_data_root
from monkeyreport.data import fingerprint, list_files, locate, scan
from monkeyreport.models import create
from monkeyreport.training import run_experiment, select_experiments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/offline.toml"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--only", action="append")
    parser.add_argument("--finetune-epochs", type=int, help="epochs for fine-tuned experiments "
                        "(their target is per epoch; default: the config's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()

    config = load_config(args.config).with_overrides(data_dir=data_dir_override(args.data_dir))
    layout = locate(resolve_data_root(config))
    entries = list_files(layout)
    records = scan(layout, entries, config.data.max_image_pixels, config.eda.workers)
    fp = fingerprint(layout, entries)
    rows = []
    with tempfile.TemporaryDirectory(prefix="monkeyreport-bench-") as tmp:
        for experiment in select_experiments(config, args.only):
            epochs = config.training.epochs
            if not experiment.frozen and args.finetune_epochs:
                epochs = args.finetune_epochs
            cfg = _with_training(config, epochs=epochs)
            plain = _timed_run(_with_training(cfg, image_cache=False, feature_cache=False),
                               experiment, layout, records, fp, Path(tmp) / "plain" / experiment.name)
            optimised = _timed_run(cfg, experiment, layout, records, fp, Path(tmp) / "optimised" / experiment.name)
            floor = compute_floor(cfg, experiment, len(layout.classes), plain["n_train"], plain["n_val"])
            rows.append(_row(experiment, epochs, plain, optimised, floor))
            print(_format_row(rows[-1]), flush=True)
    report = _markdown(config, args, rows)
    results.write_text(args.out, report)
    print(report)


def _with_training(config: Config, **changes: object) -> Config:
    return dataclasses.replace(config, training=dataclasses.replace(config.training, **changes))


def _timed_run(config: Config, experiment: ExperimentConfig, layout, records, fp: str, runs_dir: Path) -> dict:
    config = dataclasses.replace(config, output=dataclasses.replace(config.output, runs_dir=str(runs_dir)))
    start = time.perf_counter()
    outcome = run_experiment(config, experiment, layout, records, fp, force=True)
    total = time.perf_counter() - start
    with (outcome.run_dir / "history.csv").open() as f:
        epoch_seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    m = outcome.metrics
    return {"total": total, "epoch": statistics.fmean(epoch_seconds), "accuracy": m["accuracy"],
            "n_train": m["n_train"], "n_val": m["n_val"], "device": m["device"]}


def _device(config: Config) -> torch.device:
    wants_gpu = config.trainer.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def compute_floor(config: Config, experiment: ExperimentConfig, num_classes: int,
                  n_train: int, n_val: int) -> float:
    """Seconds of pure compute on synthetic tensors (see the module docstring)."""
    device = _device(config)
    model = create(experiment.architecture, num_classes, "none", experiment.frozen).model.to(device)
    t = config.training
    shape = (3, t.crop, t.crop)

    def batches(n: int) -> list[int]:
        return [min(t.batch_size, n - i) for i in range(0, n, t.batch_size)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward_pass(module: torch.nn.Module, n: int) -> None:
        module.eval()
        with torch.inference_mode():
            for size in batches(n):
                module(torch.randn(size, *shape, device=device))

    forward_pass(model.backbone if experiment.frozen else model, min(n_val, t.batch_size))  # warm-up
    sync()
    start = time.perf_counter()
    if experiment.frozen:
        forward_pass(model.backbone, n_train + n_val)
    else:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=t.learning_rate)
        for size in batches(n_train):
            x = torch.randn(size, *shape, device=device)
            y = torch.randint(0, num_classes, (size,), device=device)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        forward_pass(model, n_val)
    sync()
    return time.perf_counter() - start


def _row(experiment: ExperimentConfig, epochs: int, plain: dict, optimised: dict, floor: float) -> dict:
    key = "total" if experiment.frozen else "epoch"
    return {
        "experiment": experiment.name, "frozen": experiment.frozen, "epochs": epochs,
        "measure": "total" if experiment.frozen else "per epoch",
        "plain": plain[key], "optimised": optimised[key], "floor": floor,
        "ratio_floor": optimised[key] / floor, "speedup": plain[key] / optimised[key],
        "acc_plain": plain["accuracy"], "acc_optimised": optimised["accuracy"],
        "device": optimised["device"],
    }


def _format_row(r: dict) -> str:
    return (f"| {r['experiment']} | {'yes' if r['frozen'] else 'no'} | {r['epochs']} | {r['measure']} "
            f"| {r['plain']:.1f} | {r['optimised']:.1f} | {r['floor']:.1f} | {r['ratio_floor']:.2f} "
            f"| {r['speedup']:.2f} | {r['acc_plain']:.4f} / {r['acc_optimised']:.4f} |")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.processor() or platform.machine()


def _machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{_cpu_model()}, {os.cpu_count()} CPU cores{gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def _markdown(config: Config, args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        "# Benchmark: plain path, optimised path, compute floor",
        "",
        f"- Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- Machine: {_machine()}",
        f"- Config: `{args.config}`; crop {config.training.crop}, batch {config.training.batch_size}; "
        f"device used: {rows[0]['device'] if rows else '-'}",
        f"- Command: `python benchmarks/bench.py --config {args.config}"
        + (f" --finetune-epochs {args.finetune_epochs}" if args.finetune_epochs else "") + "`",
        "",
        "Times in seconds. Frozen experiments: total time of the run; fine-tuned: mean time per",
        "epoch (training + validation). Targets: frozen optimised/floor <= 1.3 and plain/optimised",
        ">= 4; fine-tuned optimised/floor <= 1.15.",
        "",
        "| experiment | frozen | epochs | measure | plain | optimised | floor | optimised/floor "
        "| plain/optimised | accuracy plain / optimised |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_format_row(r) for r in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
