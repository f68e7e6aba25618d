"""The figures stage: the report's diagrams, confusion matrices and training curves.

Drawn from result files only (report/models/<architecture>.json, runs/<experiment>/
metrics.json and history.csv, report/stats/stats.json, the templates' species table and
figure words) into report/figures/,
with figures.json saying which were drawn. `render` reads that list and draws nothing, so a
revision of the text never imports matplotlib. The data figures are the eda stage's, the
interpretation figures the interpret stage's.
"""

from __future__ import annotations

import functools

import time
from pathlib import Path
from typing import Any

from monkeyreport import run_state, selection
from monkeyreport.config import Config, ExperimentConfig
from monkeyreport.errors import MonkeyReportError
from monkeyreport.figure_words import FigureWords, figure_words
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import (EdaSummary, FiguresManifest, History, ModelSummary, ReportFiles, RunFiles,
                                  Statistics)
from monkeyreport.species import species_names


def panel_title(experiment: ExperimentConfig, words: FigureWords) -> str:
    """An experiment's name inside a figure: its title, with the variant for transfer learning."""
    if selection.is_baseline(experiment.architecture):
        return experiment.label
    return words["experiments"]["frozen" if experiment.frozen else "finetuned"].format(label=experiment.label)


def panel_label(experiment: ExperimentConfig, members: list[ExperimentConfig], words: FigureWords) -> str:
    """A panel's title among those of one architecture (confusion matrices, Grad-CAM rows):
    the variant, with the experiment's title where two experiments of the architecture share
    a variant (two recipes); alone, its title."""
    if len(members) == 1:
        return experiment.label
    variant = "frozen" if experiment.frozen else "finetuned"
    shared = sum(m.frozen == experiment.frozen for m in members) > 1
    return words["experiments"][f"{variant}_shared"].format(label=experiment.label) if shared \
        else words["experiments"][f"{variant}_variant"]


def reliability_panels(config: Config, statistics: Statistics | None,
                       words: FigureWords) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, calibration from stats.json) of each experiment's first finished seed."""
    if statistics is None:
        return []
    return [(panel_title(e, words), statistics.experiments[statistics.groups[e.name]["runs"][0]]["calibration"])
            for e in config.experiments if e.name in statistics.groups]


def draw(config: Config, templates_dir: Path) -> FiguresManifest:
    """Draw every report figure that has its data; write and return figures.json (paths
    relative to the report folder, None where a figure has no data)."""
    from monkeyreport import figures

    report = ReportFiles(config.report_dir)
    eda = EdaSummary.read_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    latin = species_names(eda, templates_dir)
    names = [latin[c["code"]] for c in eda.classes]
    words = figure_words(templates_dir)

    def path(name: str) -> tuple[Path, str]:
        return report.figures_dir / name, f"{report.figures_dir.name}/{name}"

    def drawn(name: str, drawing: Any, *args: Any) -> str:
        target, rel = path(name)
        drawing(*args, target)
        return rel

    cnn = drawn("cnn_schematic.png", figures.cnn_schematic, words, len(names))
    transfer = drawn("transfer_learning.png", figures.transfer_learning_scheme, words, len(names))
    experiments = config.experiments
    diagrams: dict[str, str | None] = {}
    for arch in dict.fromkeys(e.architecture for e in experiments):
        summary = ModelSummary.read_if_exists(report.model_summary(arch))
        diagrams[arch] = drawn(f"arch_{arch}.png", figures.architecture_diagram, summary, words) if summary else None
    finished = run_state.finished(config)
    first = {name: seeds[0] for name, seeds in finished.items()}  # the per-run figures show the first seed
    confusion: dict[str, str | None] = {}
    for arch in dict.fromkeys(e.architecture for e in experiments):
        members = [e for e in experiments if e.architecture == arch]
        panels = [(panel_label(e, members, words), first[e.name][1].confusion_matrix) for e in members if e.name in first]
        confusion[arch] = drawn(f"confusion_{arch}.png", figures.confusion_matrices, panels, names, words) if panels else None
    histories = []
    for e in experiments:
        history = History.read(RunFiles.of(config.runs_dir, first[e.name][0].name).history).rows if e.name in first else []
        if history:
            histories.append((panel_title(e, words), history))
    holdout = config.training.selection == "holdout"
    curves = (drawn("training_curves.png", functools.partial(figures.training_curves, holdout=holdout), histories,
                    words) if histories else None)
    seeds = None
    if len(config.run_seeds) > 1 and finished:
        points = [(panel_title(e, words), [(run.seed, m.accuracy, m.macro_f1) for run, m in finished[e.name]])
                  for e in experiments if e.name in finished]
        seeds = drawn("seeds.png", figures.seed_values, points, words)
    panels = reliability_panels(config, Statistics.read_if_exists(report.statistics), words)
    reliability = drawn("reliability.png", figures.reliability_diagrams, panels, words) if panels else None
    manifest = FiguresManifest(cnn=cnn, transfer=transfer, diagrams=diagrams, confusion=confusion, curves=curves,
                               seeds=seeds, reliability=reliability)
    manifest.write(report.figures_manifest)
    return manifest


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's figures stage."""
    start = time.perf_counter()
    manifest = draw(config, options.templates)
    return StageOutcome(f"figures {timed(start)}: {len(manifest.drawn)} drawn -> "
                        f"{ReportFiles(config.report_dir).figures_dir}")
