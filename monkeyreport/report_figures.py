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

from monkeyreport import results, selection
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import History, ReportFiles, RunFiles, RunMetrics


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


def draw(config: Config, templates_dir: Path) -> dict[str, Any]:
    """Draw every report figure that has its data; return figures.json's content (paths
    relative to the report folder, None where a figure has no data)."""
    from monkeyreport import figures
    from monkeyreport.interpret import species_names

    report = ReportFiles(config.report_dir)
    eda = results.read_json_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    latin = species_names(eda, templates_dir)
    names = [latin[c["code"]] for c in eda["classes"]]

    def path(name: str) -> tuple[Path, str]:
        return report.figures_dir / name, f"{report.figures_dir.name}/{name}"

    def drawn(name: str, drawing: Any, *args: Any) -> str:
        target, rel = path(name)
        drawing(*args, target)
        return rel

    manifest: dict[str, Any] = {"schema": results.FIGURES_SCHEMA,
                                "cnn": drawn("cnn_schematic.png", figures.cnn_schematic),
                                "transfer": drawn("transfer_learning.png", figures.transfer_learning_scheme),
                                "diagrams": {}, "confusion": {}, "curves": None}
    experiments = config.experiments
    for arch in dict.fromkeys(e.architecture for e in experiments):
        summary = results.read_json_if_exists(report.model_summary(arch))
        manifest["diagrams"][arch] = (drawn(f"arch_{arch}.png", figures.architecture_diagram, summary)
                                      if summary else None)
    runs = _finished(config)
    for arch in dict.fromkeys(e.architecture for e in experiments):
        members = [e for e in experiments if e.architecture == arch]
        panels = [((("Backbone congelado" if e.frozen else "Fine-tuning") if len(members) > 1 else e.label),
                   runs[e.name].confusion_matrix) for e in members if e.name in runs]
        manifest["confusion"][arch] = (drawn(f"confusion_{arch}.png", figures.confusion_matrices, panels, names)
                                       if panels else None)
    histories = []
    for e in experiments:
        history = History.read(RunFiles.of(config.runs_dir, e.name).history).rows if e.name in runs else []
        if history:
            histories.append((panel_title(e.label, e.frozen, not selection.is_baseline(e.architecture)), history))
    if histories:
        manifest["curves"] = drawn("training_curves.png", figures.training_curves, histories)
    results.write_json(report.figures_manifest, manifest)
    return manifest


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's figures stage."""
    start = time.perf_counter()
    manifest = draw(config, options.templates)
    count = 2 + sum(1 for group in ("diagrams", "confusion") for rel in manifest[group].values() if rel) + \
        (1 if manifest["curves"] else 0)
    return StageOutcome(f"figures {timed(start)}: {count} drawn -> {ReportFiles(config.report_dir).figures_dir}")
