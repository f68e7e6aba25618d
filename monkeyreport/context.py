"""The template context: facts gathered from result files, never worded here.

Inputs are files only (through the contract in results.py): report/eda/eda.json,
report/stats/stats.json, runs/<experiment>/{metrics,failed}.json and history.csv,
report/models/<architecture>.json and the config. Numbers travel raw; the templates word
and format them (spanish_format). Conclusions are findings: a `kind` plus the facts they
rest on, which a template macro turns into sentences. Like render, this never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path
from typing import Any

from monkeyreport import selection
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.findings import comparison_rows, findings, row_scores
from monkeyreport.results import (EdaSummary, FiguresManifest, History, Interpretation, ModelSummary, ReportFiles,
                                  RunFailure, RunFiles, RunMetrics, Statistics)
from monkeyreport.species import class_entries, species_table

# The report's sections on architectures, in document order: the families of section 2, then
# the baseline (drawn with the details of the models); their diagrams are numbered in this order.
SECTION_FAMILIES = ("alexnet", "resnet", "efficientnet")

ORIGINAL_RESULTS = {  # (architecture, frozen) -> (accuracy, macro F1) published by the original
    ("vanilla_cnn", False): (0.4632, 0.4611),
    ("alexnet", True): (0.9412, 0.9418),
    ("alexnet", False): (0.1103, 0.0199),
    ("resnet34", True): (0.9669, 0.9664),
    ("resnet34", False): (0.8971, 0.8981),
    ("efficientnet_b0", True): (0.9485, 0.9482),
    ("efficientnet_b0", False): (0.9816, 0.9812),
}
ORIGINAL_COUNTS = {"training": 1097, "validation": 272}
FIGURE_MARK = ("⟦", "⟧")  # around "fig:<key>" or "tab:<key>" where a number goes (render.number_figures)
SHARED_MIN_ARCHITECTURES = 2  # a confused pair is "shared" across this many distinct architectures


# ----------------------------------------------------------------------------- experiments


def experiment_rows(config: Config, statistics: Statistics) -> list[dict[str, Any]]:
    """One row per configured experiment, in Tabla 1 order. Its metrics are the means over
    its finished seeds (`group`: mean, SD, values); `run`, `stats` and `history` are those of
    its first finished seed, which the per-run figures and tables show."""
    rows = []
    for exp in config.experiments:
        runs = [r for r in config.runs if r.experiment is exp]
        read = [(r, files, *_read_run(files)) for r in runs for files in [RunFiles.of(config.runs_dir, r.name)]]
        finished = [(r, files, metrics) for r, files, metrics, _ in read if metrics]
        first, files, metrics, problem = next(((r, f, m, "") for r, f, m in finished), read[0])
        failed, failed_problem = _read_failure(files) if not (metrics or problem) else (None, "")
        problem = problem or failed_problem
        status = "ok" if metrics else ("unreadable" if problem else ("failed" if failed else "pending"))
        group = statistics.groups.get(exp.name) if metrics else None
        rows.append({
            "name": exp.name, "label": exp.label, "architecture": exp.architecture,
            "frozen": exp.frozen, "pretrained": metrics.pretrained if metrics else exp.pretrained,
            "status": status, "transfer": not selection.is_baseline(exp.architecture),
            "run": metrics, "run_name": first.name, "seed": first.seed, "reason": problem or (failed.reason if failed else ""),
            "file": files.failed if failed_problem else files.metrics,
            "history": History.read(files.history).rows if metrics else [],
            "accuracy": group["accuracy"]["mean"] if group else (metrics.accuracy if metrics else None),
            "macro_f1": group["macro_f1"]["mean"] if group else (metrics.macro_f1 if metrics else None),
            "stats": statistics.experiments.get(first.name) if metrics else None,
            "group": group, "n_seeds": len(runs), "recipe": exp.training,
            "best": False,
        })
    for r in selection.top([r for r in rows if r["status"] == "ok"], row_scores):
        r["best"] = True
    return rows


def _read_run(files: RunFiles) -> tuple[RunMetrics | None, str]:
    """The run's metrics, or the one-line problem of a damaged metrics.json."""
    if not files.metrics.is_file():
        return None, ""
    try:
        return RunMetrics.read(files.metrics), ""
    except MonkeyReportError as exc:
        return None, str(exc)


def _read_failure(files: RunFiles) -> tuple[RunFailure | None, str]:
    """Why the run failed, or the one-line problem of a damaged failed.json."""
    try:
        return RunFailure.read(files.failed), ""
    except MonkeyReportError as exc:
        return None, str(exc)


def random_weights(rows: list[dict[str, Any]]) -> bool:
    """True when a transfer-learning experiment starts from random instead of pretrained weights."""
    return any(r["transfer"] and r["pretrained"] == "none" for r in rows)


# ----------------------------------------------------------------------------- per class


def per_class_view(rows: list[dict[str, Any]], classes: list[dict[str, str]]) -> dict[str, Any] | None:
    """Precision/recall/F1 per species of the best experiment, and the confused pairs:
    those of the best experiment and those among the top pairs of several experiments."""
    best = next((r for r in rows if r["best"] and r["stats"]), None)
    if best is None:
        return None
    names = {c["code"]: c for c in classes}
    table = [s | {"species": names.get(s["class"], {"latin": s["class"]})} for s in best["stats"]["per_class"]]
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["stats"]:
            for p in r["stats"]["most_confused"]:
                seen.setdefault(tuple(p["pair"]), []).append(r)
    # A pair shared by several experiments says something of the data only when they are
    # different architectures (two variants of one model share its weights and errors);
    # `repeated`: pairs that several experiments of one architecture confuse, nothing more.
    repeated = [{"pair": [names.get(c, {"latin": c}) for c in pair], "rows": members}
                for pair, members in seen.items() if len(members) >= 2]
    repeated.sort(key=lambda s: -len(s["rows"]))
    shared = [s for s in repeated if len({r["architecture"] for r in s["rows"]}) >= SHARED_MIN_ARCHITECTURES]
    confused = [p | {"species": [names.get(c, {"latin": c}) for c in p["pair"]]}
                for p in best["stats"]["most_confused"]]
    return {"row": best, "table": table, "confused": confused, "shared": shared,
            "repeated": [s for s in repeated if s not in shared]}


# ----------------------------------------------------------------------------- methods


def normalisations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Experiments grouped by the normalisation statistics their runs recorded."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["run"]:
            pre = r["run"].preprocessing
            key = (tuple(pre.mean), tuple(pre.std))
            groups.setdefault(key, {"kind": pre.normalisation, "mean": list(pre.mean),
                                    "std": list(pre.std), "rows": []})["rows"].append(r)
    return list(groups.values())


def architecture_entries(config: Config, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per configured architecture, in document order (SECTION_FAMILIES, then the
    rest): its summary (family, library, stages), the head and parameter counts its runs
    recorded."""
    report = ReportFiles(config.report_dir)
    archs = []
    for order, arch in enumerate(dict.fromkeys(r["architecture"] for r in rows)):
        members = [r for r in rows if r["architecture"] == arch]
        measured = [r["run"] for r in members if r["run"]]
        frozen = [r["run"] for r in members if r["run"] and r["frozen"]]
        run = measured[0] if measured else None
        summary = ModelSummary.read_if_exists(report.model_summary(arch))
        archs.append({"name": arch, "order": order, "title": summary.title if summary else members[0]["label"],
                      "family": summary.family if summary else "other", "library": summary.library if summary else "",
                      "summary": summary,
                      "summary_file": report.model_summary(arch).relative_to(report.report_dir).as_posix(),
                      "head": run.head if run else None, "params_head": run.params_head if run else None,
                      "params_total": run.params_total if run else None,
                      "params_trainable_frozen": frozen[0].params_trainable if frozen else None})
    order = {family: i for i, family in enumerate(SECTION_FAMILIES)}
    return sorted(archs, key=lambda a: order.get(a["family"], len(order)))


def interpretation_view(config: Config, rows: list[dict[str, Any]],
                        classes: list[dict[str, str]]) -> dict[str, Any]:
    """The interpretation section from report/interpret/interpret.json (interpret.py): the
    most confused pairs of each experiment (stats.json), the top-loss galleries, Grad-CAM and
    the leakage pairs as figure entries. `figure_entries` numbers the figures that exist;
    one without a file keeps `number` None and its `error`. `done` is False until the
    interpretation stage has run."""
    names = {c["code"]: c for c in classes}

    def species(code: str) -> dict[str, str]:
        return names.get(code, {"latin": code})

    by_name = {r["name"]: r for r in rows}
    confusions = [{"row": r, "pairs": [p | {"species": [species(c) for c in p["pair"]]}
                                       for p in r["stats"]["most_confused"]]}
                  for r in rows if r["status"] == "ok" and r["stats"]]
    view: dict[str, Any] = {"done": False, "confusions": confusions, "galleries": [], "gradcam": None,
                            "leakage": None}
    data = Interpretation.read_if_exists(ReportFiles(config.report_dir).interpretation)
    if data is None:
        return view

    def figure(e: dict[str, Any], key: str, **facts: Any) -> dict[str, Any]:
        src = e.get("file")
        src = src if src and (config.report_dir / src).is_file() else None
        return {"number": figure_number(key) if src else None, "src": src,
                "missing": "" if src else "interpretation", "absent": [], "error": e.get("error", "")} | facts

    view["done"] = True
    for g in data.galleries:
        if g["experiment"] in by_name:
            items = [i | {"true_species": species(i["true"]), "predicted_species": species(i["predicted"])}
                     for i in g["items"]]
            view["galleries"].append(figure(g, f"top-losses-{g['experiment']}", row=by_name[g["experiment"]],
                                            roles=g["roles"], cells=items,
                                            n_leaked=sum(i["leaked"] for i in items),
                                            n_wrong=sum(i["true"] != i["predicted"] for i in items)))
    cam = data.gradcam
    if cam:
        panels = [p | {"row": by_name.get(p["experiment"])} for p in cam["panels"]]
        view["gradcam"] = figure(cam, "gradcam", title=cam["title"], target_layer=cam["target_layer"],
                                 panels=panels,
                                 random_weights=any(p["random_weights"] for p in panels),
                                 failed=[p for p in panels if p["error"]],
                                 n_species=len(cam["images"]))
    leak = data.leakage
    if leak:
        view["leakage"] = figure(leak, "leakage", pairs=[p | {"species": species(p["class"])} for p in leak["pairs"]])
    return view


def figure_number(key: str) -> str:
    """Where a figure's number goes: render numbers the figures in the order the templates
    place them (render.number_figures), so a reordered section cannot misnumber them."""
    return f"{FIGURE_MARK[0]}fig:{key}{FIGURE_MARK[1]}"


def figure_entries(config: Config, eda: EdaSummary, rows: list[dict[str, Any]],
                   architectures: list[dict[str, Any]]) -> dict[str, Any]:
    """Every report figure's facts keyed by role, from figures.json (the figures stage).

    Each entry has its `number` (a `figure_number` mark that render replaces by the figure's
    place in the document) and `src` (None when it is not on disk) and says why it is
    missing (`missing`: "figures" when the figures stage has not drawn it, "model_summary",
    "eda" or "no_results"); the templates write the captions and the notes.
    """
    report = ReportFiles(config.report_dir)
    report_dir = config.report_dir
    drawn = FiguresManifest.read_if_exists(report.figures_manifest)
    entries: dict[str, Any] = {}

    def on_disk(rel: str | None) -> str | None:
        return rel if rel and (report_dir / rel).is_file() else None

    def entry(key: str, rel: str | None, missing: str = "", **facts: Any) -> None:
        entries[key] = {"number": figure_number(key), "src": on_disk(rel),
                        "missing": "" if on_disk(rel) else missing, "absent": []} | facts

    entry("cnn", drawn and drawn.cnn, "figures")

    def diagram(arch: dict[str, Any]) -> dict[str, Any]:
        rel = on_disk(drawn.diagrams.get(arch["name"])) if drawn and arch["summary"] else None
        missing = "" if rel else ("figures" if arch["summary"] else "model_summary")
        return {"number": figure_number(f"arch-{arch['name']}"), "src": rel, "missing": missing, "absent": [],
                "architecture": arch["name"], "family": arch["family"], "title": arch["title"],
                "input_shape": arch["summary"].input_shape if arch["summary"] else None,
                "summary_file": arch["summary_file"]}

    in_sections = [a for a in architectures if a["family"] in SECTION_FAMILIES]
    diagrams = [diagram(a) for a in in_sections]
    entry("transfer", drawn and drawn.transfer, "figures")
    for key in ("class_distribution", "sample_grid"):
        entry(key, eda.figures.get(key), "eda")
    diagrams += [diagram(a) for a in architectures if a["family"] not in SECTION_FAMILIES]
    entries["diagrams"] = diagrams

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["architecture"], []).append(r)
    cms = []
    for arch, members in groups.items():
        done = [r for r in members if r["status"] == "ok"]
        rel = on_disk(drawn.confusion.get(arch)) if drawn and done else None
        cms.append({"number": figure_number(f"confusion-{arch}"), "src": rel,
                    "missing": "" if rel else ("figures" if done else "no_results"),
                    "title": members[0]["label"], "members": done,
                    "absent": [r for r in members if r["status"] != "ok"]})
    entries["confusion"] = cms
    curves = any(r["status"] == "ok" and r["history"] for r in rows)
    entry("curves", drawn.curves if drawn and curves else None, "figures" if curves else "no_results")
    entry("seeds", drawn.seeds if drawn else None, "figures")
    return entries


# ----------------------------------------------------------------------------- context


def _shown_path(source: str | None) -> str | None:
    """The config's path as the report shows it: relative to the working folder when inside it,
    else its name (never an absolute path of the build machine)."""
    if not source:
        return None
    path = Path(source).resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def build_context(config: Config, rows: list[dict[str, Any]], statistics: Statistics,
                  templates_dir: Path) -> dict[str, Any]:
    """Everything the templates need; `rows` from `experiment_rows`, `statistics` from stats.json."""
    report = ReportFiles(config.report_dir)
    eda = EdaSummary.read_if_exists(report.eda)
    if eda is None:
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    classes = class_entries(eda, species_table(templates_dir))
    architectures = architecture_entries(config, rows)
    per_class = per_class_view(rows, classes)
    interpretation = interpretation_view(config, rows, classes)
    leakage = eda.duplicates["n_validation_files_in_cross_split_groups"]
    tests = comparison_rows(rows, statistics)
    done = [r for r in rows if r["status"] == "ok"]
    n_val_used = done[0]["run"].n_val if done else eda.splits["validation"]["total"]
    measured = [r["stats"] for r in done if r["stats"]]
    # Leaked images among those the runs validated on (a subset profile uses fewer).
    leaked_used = n_val_used - measured[0]["leak_free"]["accuracy"]["n"] if measured else leakage
    config_text = ""
    if config.source and Path(config.source).is_file():
        config_text = Path(config.source).read_text(encoding="utf-8")
    return {
        "build_date": date.today(),
        "random_weights": random_weights(rows),
        "subset": config.training.max_images_per_class,
        "config_source": _shown_path(config.source),
        "config_text": config_text,
        "seed": config.seed,
        "seeds": config.run_seeds,
        "eda": eda,
        "classes": classes,
        "num_classes": len(classes),
        "train_total": eda.splits["training"]["total"],
        "val_total": eda.splits["validation"]["total"],
        "splits": eda.splits,
        "sizes": eda.image_sizes,
        "formats": eda.formats,
        "extensions": eda.extensions,
        "odd_files": eda.odd_files,
        "unreadable": eda.unreadable,
        "dup": eda.duplicates,
        "leakage": leakage,
        "dataset_problems": eda.dataset_problems,
        "training": dataclasses.asdict(config.training) | {
            "resize": done[0]["run"].preprocessing.resize if done else config.training.resize,
            "crop": done[0]["run"].preprocessing.crop if done else config.training.crop,
        },
        "recipes": [r for r in rows if r["recipe"]],
        "normalisations": normalisations(rows),
        "experiments": rows,
        "architectures": architectures,
        "statistics": statistics,
        "n_val_used": n_val_used,
        "n_train_used": done[0]["run"].n_train if done else eda.splits["training"]["total"],
        "leaked_used": leaked_used,
        # Half-width of a 95 % normal-approximation interval at accuracy 0.95, for the text.
        "typical_margin": 1.96 * math.sqrt(0.95 * 0.05 / max(n_val_used, 1)),
        "comparisons": tests,
        "per_class": per_class,
        "pending": [r for r in rows if r["status"] == "pending"],
        "failed": [r for r in rows if r["status"] == "failed"],
        "unreadable_results": [r for r in rows if r["status"] == "unreadable"],
        "findings": findings(rows, tests, len(classes), leaked_used,
                             per_class["shared"] if per_class else [], statistics.parameters),
        "figures": figure_entries(config, eda, rows, architectures),
        "interpretation": interpretation,
        "versions": done[0]["run"].versions if done else {},
        "fingerprint": eda.dataset_fingerprint,
        "original": {"results": [ORIGINAL_RESULTS.get((r["architecture"], r["frozen"] and r["transfer"]))
                                 for r in rows],
                     "counts": ORIGINAL_COUNTS},
    }
