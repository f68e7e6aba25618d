"""The figures stage: the report's diagrams, confusion matrices and training curves.

Drawn from result files only (report/models/<architecture>.json, runs/<experiment>/
metrics.json and history.csv, the species table of the templates) into report/figures/,
with figures.json saying which were drawn. `render` reads that list and draws nothing, so a
revision of the text never imports matplotlib. The data figures are the eda stage's, the
interpretation figures the interpret stage's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from monkeyreport import selection
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import EdaSummary, FiguresManifest, History, ModelSummary, ReportFiles, RunFiles, RunMetrics


def panel_title(label: str, frozen: bool, transfer: bool) -> str:
    """An experiment's name inside a figure image (figures carry Spanish labels of their own)."""
    if not transfer:
        return label
    return f"{label} ({'congelado' if frozen else 'fine-tuning'})"


def _finished(config: Config) -> dict[str, RunMetrics]:
    """The readable metrics of the configured experiments (render reports the unreadable)."""
    runs = {}
    for exp in config.experiments:
        path = RunFiles.of(config.runs_dir, exp.name).metrics
        if path.is_file():
            try:
                runs[exp.name] = RunMetrics.read(path)
            except MonkeyReportError:
                continue
    return runs


def draw(config: Config, templates_dir: Path) -> FiguresManifest:
    """Draw every report figure that has its data; write and return figures.json (paths
    relative to the report folder, None where a figure has no data)."""
    from monkeyreport import figures
    from monkeyreport.interpret import species_names

    report = ReportFiles(config.report_dir)
    eda = EdaSummary.read_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    latin = species_names(eda, templates_dir)
    names = [latin[c["code"]] for c in eda.classes]

    def path(name: str) -> tuple[Path, str]:
        return report.figures_dir / name, f"{report.figures_dir.name}/{name}"

    def drawn(name: str, drawing: Any, *args: Any) -> str:
        target, rel = path(name)
        drawing(*args, target)
        return rel

    cnn = drawn("cnn_schematic.png", figures.cnn_schematic)
    transfer = drawn("transfer_learning.png", figures.transfer_learning_scheme)
    experiments = config.experiments
    diagrams: dict[str, str | None] = {}
    for arch in dict.fromkeys(e.architecture for e in experiments):
        summary = ModelSummary.read_if_exists(report.model_summary(arch))
        diagrams[arch] = drawn(f"arch_{arch}.png", figures.architecture_diagram, summary) if summary else None
    runs = _finished(config)
    confusion: dict[str, str | None] = {}
    for arch in dict.fromkeys(e.architecture for e in experiments):
        members = [e for e in experiments if e.architecture == arch]
        panels = [((("Backbone congelado" if e.frozen else "Fine-tuning") if len(members) > 1 else e.label),
                   runs[e.name].confusion_matrix) for e in members if e.name in runs]
        confusion[arch] = drawn(f"confusion_{arch}.png", figures.confusion_matrices, panels, names) if panels else None
    histories = []
    for e in experiments:
        history = History.read(RunFiles.of(config.runs_dir, e.name).history).rows if e.name in runs else []
        if history:
            histories.append((panel_title(e.label, e.frozen, not selection.is_baseline(e.architecture)), history))
    curves = drawn("training_curves.png", figures.training_curves, histories) if histories else None
    manifest = FiguresManifest(cnn=cnn, transfer=transfer, diagrams=diagrams, confusion=confusion, curves=curves)
    manifest.write(report.figures_manifest)
    return manifest


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's figures stage."""
    start = time.perf_counter()
    manifest = draw(config, options.templates)
    return StageOutcome(f"figures {timed(start)}: {len(manifest.drawn)} drawn -> "
                        f"{ReportFiles(config.report_dir).figures_dir}")
