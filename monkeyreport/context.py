"""The template context: facts gathered from result files, never worded here.

Inputs are files only (through the contract in results.py): report/eda/eda.json,
report/stats/stats.json, runs/<experiment>/{metrics,failed}.json and history.csv,
report/models/<architecture>.json and the config. Numbers travel raw; the templates word
and format them (spanish_format). Conclusions are findings: a `kind` plus the facts they
rest on, which a template macro turns into sentences. Like render, this never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import date
from pathlib import Path
from typing import Any

from monkeyreport import selection
from monkeyreport.architectures import ARCHITECTURES
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError
from monkeyreport.findings import comparison_rows, diagnosis, find_test, findings, row_scores, shared_confusions
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
# What the original report is known to have trained with (REPORT_SPEC 6.1): TrainingConfig's
# defaults are that recipe; its number of epochs and its seeds are not known.
ORIGINAL_RECIPE = {"learning_rate": 0.001, "batch_size": 32, "resize": 256, "crop": 224}
FIGURE_MARK = ("⟦", "⟧")  # around "fig:<key>" or "tab:<key>" where a number goes (render.number_figures)


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
            "on_features": config.recipe(exp).trains_on_features(exp.frozen),  # head trained on cached features
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
    # A pair shared by several experiments says something of the data only under the rule of
    # findings.shared_confusions (distinct architectures, enough photographs each).
    confusions = shared_confusions(rows)

    def named(entry: dict[str, Any]) -> dict[str, Any]:
        return entry | {"pair": [names.get(c, {"latin": c}) for c in entry["pair"]]}

    confused = [p | {"species": [names.get(c, {"latin": c}) for c in p["pair"]]}
                for p in best["stats"]["most_confused"]]
    return {"row": best, "table": table, "confused": confused, "shared": [named(e) for e in confusions["shared"]],
            "repeated": [named(e) for e in confusions["repeated"]], "rule": confusions["rule"]}


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
                                 n_species=len(cam["images"]),
                                 # What the text reads of the maps (interpret.cam_summary per panel).
                                 map_size=cam["map_size"], input_size=cam["input_size"],
                                 top_fraction=cam["top_fraction"], agreement_levels=cam["agreement_levels"],
                                 n_chosen_wrong=sum(i["wrong"] > 0 for i in cam["images"]),
                                 reference=next((p for p in panels if p["experiment"] == cam["reference"]), None),
                                 compared=[p for p in panels if p["agreement"]])
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
    entry("reliability", drawn.reliability if drawn else None, "figures")
    return entries


# ----------------------------------------------------------------------------- the original


def _original_counterpart(row: dict[str, Any]) -> dict[str, Any] | None:
    """The original's row this experiment is compared with: the same architecture and
    variant, else the original's architecture of the same family (`substitute`: the
    EfficientNetB0 of the original for an EfficientNet-Lite0); none for an experiment with
    a recipe of its own, which the original did not train."""
    frozen = row["frozen"] and row["transfer"]
    if row["recipe"]:
        return None
    if (row["architecture"], frozen) in ORIGINAL_RESULTS:
        return {"architecture": row["architecture"], "title": ARCHITECTURES[row["architecture"]].title,
                "substitute": False, "values": ORIGINAL_RESULTS[(row["architecture"], frozen)]}
    family = ARCHITECTURES[row["architecture"]].family if row["architecture"] in ARCHITECTURES else None
    for (arch, was_frozen), values in ORIGINAL_RESULTS.items():
        if was_frozen == frozen and ARCHITECTURES[arch].family == family:
            return {"architecture": arch, "title": ARCHITECTURES[arch].title, "substitute": True, "values": values}
    return None


def _original_differences(done: list[dict[str, Any]]) -> dict[str, Any]:
    """How the finished runs depart from what is known of the original's recipe, each
    difference with the rows it applies to: their own recipe keys (TrainingConfig's defaults
    are the original's recipe), learning rate, batch and image sizes; weights other than
    ImageNet's, other normalisation, reduced precision; and the epochs and training images
    they used (the original's epochs are not known)."""
    recipe: dict[tuple[str, str], dict[str, Any]] = {}
    for r in done:
        run = r["run"]
        recorded = {"learning_rate": run.learning_rate, "batch_size": run.batch_size,
                    "resize": run.preprocessing.resize, "crop": run.preprocessing.crop}
        changes = dict(run.recipe) | {k: v for k, v in recorded.items() if v and v != ORIGINAL_RECIPE[k]}
        for key, value in changes.items():
            recipe.setdefault((key, repr(value)), {"key": key, "value": value, "rows": []})["rows"].append(r)
    precision = [r for r in done if r["run"].compute.get("precision", "32-true") != "32-true"]
    return {"recipe": list(recipe.values()),
            "weights": [r for r in done if r["transfer"] and r["run"].pretrained != "imagenet"],
            "normalisation": [r for r in done if r["run"].preprocessing.normalisation != "imagenet"],
            "precision": precision, "precisions": sorted({r["run"].compute["precision"] for r in precision}),
            "epochs": sorted({r["run"].selected_epoch for r in done}),
            "last_epochs": sorted({r["run"].epochs for r in done}),
            "n_train": sorted({r["run"].n_train for r in done})}


def original_view(rows: list[dict[str, Any]], tests: list[dict[str, Any]]) -> dict[str, Any]:
    """This build beside the original report's Table 1, as facts: each row's counterpart;
    the order of the comparable rows (finished, base recipe, with a counterpart) here and in
    the original, and the rows whose place differs; for each architecture with both
    variants, which one led here and in the original (`reversed` where that changed, with
    this build's test); and what in this build's recipe differs from the original's."""
    counterparts = [_original_counterpart(r) for r in rows]
    comparable = [(r, c) for r, c in zip(rows, counterparts) if c and r["status"] == "ok"]
    here = sorted(comparable, key=lambda rc: selection.rank_key(row_scores(rc[0])), reverse=True)
    there = sorted(comparable, key=lambda rc: rc[1]["values"], reverse=True)
    place = {id(r): i for i, (r, _) in enumerate(there)}
    order = [{"row": r, "counterpart": c, "rank": i + 1, "original_rank": place[id(r)] + 1}
             for i, (r, c) in enumerate(here)]
    by_row = {id(r): c for r, c in comparable}
    variants = []
    for frozen, tuned in selection.variant_pairs([r for r, _ in comparable], row_scores):
        test = find_test(tests, frozen["name"], tuned["name"])
        gap, original_gap = (frozen["accuracy"] - tuned["accuracy"],
                             by_row[id(frozen)]["values"][0] - by_row[id(tuned)]["values"][0])
        variants.append({"frozen": frozen, "finetuned": tuned, "gap": gap, "original_gap": original_gap,
                         "reversed": (gap > 0) != (original_gap > 0) and gap != 0,
                         "substitute": by_row[id(frozen)]["substitute"],
                         "original_title": by_row[id(frozen)]["title"], "test": test,
                         "significant": bool(test and test["significant"])})
    differences = _original_differences([r for r, _ in comparable])
    return {"results": [c["values"] if c else None for c in counterparts], "counterparts": counterparts,
            "counts": ORIGINAL_COUNTS, "order": order,
            "original_order": sorted(order, key=lambda o: o["original_rank"]),
            "moved": [o for o in order if o["rank"] != o["original_rank"]],
            "variants": variants, "differences": differences,
            "substitutes": [r for r, c in comparable if c["substitute"]]}


# ----------------------------------------------------------------------------- efficiency


TRAINING_PASS = 3  # a training step costs about three forward passes: forward, then backward (about twice)


def training_compute(flops: int, flops_backbone: int, flops_head: int, n_train: int, n_val: int, epochs: float,
                     frozen: bool, on_features: bool) -> float:
    """Estimated FLOPs of a whole training run, validation included: every epoch trains on
    `n_train` images and evaluates `n_val`. A frozen backbone gets no backward pass; on cached
    features (`on_features`) it runs once over every image, and the epochs cost the head only."""
    if frozen and on_features:
        return flops_backbone * (n_train + n_val) + flops_head * (TRAINING_PASS * n_train + n_val) * epochs
    if frozen:
        return ((flops_backbone + TRAINING_PASS * flops_head) * n_train + flops * n_val) * epochs
    return flops * (TRAINING_PASS * n_train + n_val) * epochs


def efficiency_view(config: Config, rows: list[dict[str, Any]],
                    architectures: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Parameters, FLOPs and CPU latency per architecture (its model summary), and per
    finished experiment its training time (mean over seeds) beside its estimated training
    compute, with the facts that say whether that estimate orders the times: `concordant` of
    `pairs` experiment pairs where more compute took longer, the baseline against each
    fine-tuned transfer experiment, and each architecture's frozen variant against its
    fine-tuning. None without model summaries."""
    summaries = {a["name"]: a["summary"] for a in architectures if a["summary"]}
    if not summaries:
        return None
    archs = [a | {"head_share": a["summary"].params_head / a["summary"].params_total,
                  "latency": {lat.batch: lat.ms_per_image for lat in a["summary"].efficiency.latency}}
             for a in architectures if a["summary"]]
    experiments = {e.name: e for e in config.experiments}
    trained = []
    for r in rows:
        summary = summaries.get(r["architecture"])
        if r["status"] != "ok" or summary is None:
            continue
        run, group, e = r["run"], r["group"], summary.efficiency
        exp = experiments[r["name"]]
        on_features = config.recipe(exp).trains_on_features(exp.frozen)
        epochs = group["epochs"]["mean"] if group else run.epochs
        same_size = run.preprocessing.crop == e.input_shape[-1]
        trained.append({"row": r, "frozen": exp.frozen, "on_features": on_features, "epochs": epochs,
                        "params_trained": run.params_trainable, "params_total": run.params_total, "flops": e.flops,
                        "seconds": group["train_seconds"] if group else {"mean": run.train_seconds, "sd": 0.0, "n": 1},
                        "compute": training_compute(e.flops, e.flops_backbone, e.flops_head, run.n_train, run.n_val,
                                                    epochs, exp.frozen, on_features) if same_size else None,
                        "device": run.device,
                        # How many times the first stage shrinks the image's side (diagram shapes, 224 px input).
                        "reduction": round(summary.input_shape[-1] / summary.stages[0].output_shape[-1])})
    timed = [t for t in trained if t["compute"] is not None]
    pairs = [(a, b) for i, a in enumerate(timed) for b in timed[i + 1:]
             if a["compute"] != b["compute"] and a["seconds"]["mean"] != b["seconds"]["mean"]]
    concordant = sum((a["compute"] > b["compute"]) == (a["seconds"]["mean"] > b["seconds"]["mean"]) for a, b in pairs)

    def versus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {"a": a, "b": b, "slower": a["seconds"]["mean"] > b["seconds"]["mean"],
                "time_ratio": a["seconds"]["mean"] / b["seconds"]["mean"] if b["seconds"]["mean"] else None,
                "flops_ratio": a["flops"] / b["flops"], "more_compute": a["compute"] > b["compute"],
                "compute_ratio": a["compute"] / b["compute"], "fewer_params": a["params_total"] < b["params_total"],
                "larger_maps": a["reduction"] < b["reduction"]}

    baselines = [t for t in timed if not t["row"]["transfer"]]
    baseline = [versus(baselines[0], t) for t in timed if t["row"]["transfer"] and not t["frozen"]] if baselines else []
    variants = [versus(t, f) for t in timed if t["row"]["transfer"] and not t["frozen"]
                for f in timed if f["frozen"] and f["row"]["architecture"] == t["row"]["architecture"]
                and not f["row"]["recipe"] and not t["row"]["recipe"]]
    # Fewer parameters yet more FLOPs per image: the pair where that gap in FLOPs is widest.
    inverted = max(((a, b) for a in archs for b in archs if a["summary"].params_total < b["summary"].params_total
                    and a["summary"].efficiency.flops > b["summary"].efficiency.flops),
                   key=lambda p: p[0]["summary"].efficiency.flops / p[1]["summary"].efficiency.flops, default=None)
    return {"architectures": archs, "trained": trained, "pairs": len(pairs), "concordant": concordant,
            "inverted": {"a": inverted[0], "b": inverted[1],
                         "flops_ratio": inverted[0]["summary"].efficiency.flops / inverted[1]["summary"].efficiency.flops}
            if inverted else None,
            "baseline": baseline, "variants": variants,
            "frozen_trains_head": all(s.params_trainable_frozen == s.params_head
                                      and s.params_trainable_finetuned == s.params_total for s in summaries.values()),
            "comparable": len({t["device"] for t in trained}) <= 1,
            "devices": sorted({t["device"] for t in trained}),
            "machines": sorted({(s.efficiency.cpu, s.efficiency.threads) for s in summaries.values()}),
            "training_pass": TRAINING_PASS}


def calibration_view(rows: list[dict[str, Any]], statistics: Statistics,
                     interpretation: dict[str, Any]) -> dict[str, Any] | None:
    """ECE of each finished experiment (mean over seeds; its first seed's bins, overall mean
    confidence and accuracy), whether it is below the rule's threshold, and that verdict for
    each top-loss gallery, from the ECE of the run the gallery shows (the first seed)."""
    rule = statistics.calibration
    entries = {}
    for r in rows:
        first = r["stats"].get("calibration") if r["status"] == "ok" and r["stats"] else None
        if first:
            ece = r["group"]["ece"] if r["group"] else {"mean": first["ece"], "sd": 0.0, "n": 1}
            entries[r["name"]] = {"row": r, "ece": ece, "first": first, "trusted": ece["mean"] < rule["trusted_below"],
                                  "overconfident": first["mean_confidence"] > first["accuracy"]}
    if not entries:
        return None
    galleries = [{"gallery": g, "entry": entries[g["row"]["name"]],
                  "trusted": entries[g["row"]["name"]]["first"]["ece"] < rule["trusted_below"]}
                 for g in interpretation["galleries"] if g["src"] and g["row"]["name"] in entries]
    return {"rule": rule, "entries": list(entries.values()), "galleries": galleries,
            "trusted": [e["row"] for e in entries.values() if e["trusted"]],
            "untrusted": [e["row"] for e in entries.values() if not e["trusted"]],
            "overconfident": [e["row"] for e in entries.values() if e["overconfident"]],
            "underconfident": [e["row"] for e in entries.values() if not e["overconfident"]]}


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


# Where files live on the build machine: not settings of the report, left out of its config table.
LOCATION_KEYS = frozenset({"data.root", "output.report_dir", "output.runs_dir"})
CONFIG_HASH_DIGITS = 16


def config_changes(config: Config) -> list[dict[str, Any]]:
    """The settings of `config` that differ from the defaults of config.py, in its order:
    `section` ("" for top-level keys), `key`, `value`, `default`. LOCATION_KEYS are left out,
    and so are the experiments, whose own keys the recipes table shows (`recipes`)."""
    changes: list[dict[str, Any]] = []
    defaults = Config()
    for f in dataclasses.fields(Config):
        if f.name in ("experiments", "source"):
            continue
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            changes += [{"section": f.name, "key": sub.name,
                         "value": getattr(value, sub.name), "default": getattr(default, sub.name)}
                        for sub in dataclasses.fields(value)
                        if getattr(value, sub.name) != getattr(default, sub.name)
                        and f"{f.name}.{sub.name}" not in LOCATION_KEYS]
        elif value != default:
            changes.append({"section": "", "key": f.name, "value": value, "default": default})
    return changes


def config_hash(source: str | None) -> str | None:
    """The first CONFIG_HASH_DIGITS hex digits of the SHA-256 of the config file's bytes."""
    if not source or not Path(source).is_file():
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:CONFIG_HASH_DIGITS]


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
    leaked_used = measured[0]["n_leaked"] if measured else leakage
    return {
        "build_date": date.today(),
        # The title block: the configured date or the build's, author and course when set.
        "cover": {"date": config.report.day or date.today(), "author": config.report.author,
                  "course": config.report.course},
        "random_weights": random_weights(rows),
        "subset": config.training.max_images_per_class,
        "config_source": _shown_path(config.source),
        "config_hash": config_hash(config.source),
        "config_changes": config_changes(config),
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
        "diagnoses": [diagnosis(r, {c["code"]: c for c in classes}) for r in done],
        "pending": [r for r in rows if r["status"] == "pending"],
        "failed": [r for r in rows if r["status"] == "failed"],
        "unreadable_results": [r for r in rows if r["status"] == "unreadable"],
        "findings": findings(rows, tests, len(classes), leaked_used,
                             per_class["shared"] if per_class else [], statistics.parameters),
        "figures": figure_entries(config, eda, rows, architectures),
        "interpretation": interpretation,
        "efficiency": efficiency_view(config, rows, architectures),
        "calibration": calibration_view(rows, statistics, interpretation),
        "versions": done[0]["run"].versions if done else {},
        "fingerprint": eda.dataset_fingerprint,
        "original": original_view(rows, tests),
    }
