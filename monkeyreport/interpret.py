"""Interpretation stage: where the networks fail and what they look at.

Runs after training, reads only result files (runs/<experiment>/, report/eda/eda.json) and
the dataset's images, and writes report/interpret/: `interpret.json` (what each figure
shows, or why it is missing) and the figures themselves:

- top losses: the validation images with the highest loss, -log p(true class) taken from
  predictions.csv, of the best experiment and of the baseline (architectures.py's role);
- Grad-CAM (package grad-cam) of the best transfer-learning architecture, frozen and
  fine-tuned side by side, one validation image per species, misclassified ones among them,
  read as facts: right or wrong, how concentrated each map is, how far two models' maps agree;
- leakage: training/validation duplicate pairs (eda.json groups with `cross_split`).

Whether it runs is the pipeline's decision (pipeline.py); one explanation failing
records its reason in the JSON and leaves the other figures intact. `render` only reads
what is here (context.interpretation_view), so it never imports torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from monkeyreport import run_state, selection
from monkeyreport.architectures import facts
from monkeyreport.config import Config, ExperimentConfig, resolve_data_root
from monkeyreport.errors import MonkeyReportError
from monkeyreport.figure_words import FigureWords, figure_words
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.project import templates_for
from monkeyreport.results import EdaSummary, Interpretation, Predictions, ReportFiles, RunFiles, RunMetrics, RunStart
from monkeyreport.report_figures import panel_label
from monkeyreport.species import species_names
from monkeyreport.stats import photographs

TOP_LOSSES = 12  # images per top-loss gallery
LEAKAGE_PAIRS = 4  # training/validation pairs shown
TOP_FRACTION = 0.10  # a map's concentration: the share of its mass in its brightest 10 % of pixels
AGREEMENT_LEVELS = ((0.7, "high"), (0.4, "moderate"))  # mean Pearson r at or above each bound; else "low"


@dataclass(frozen=True)
class FinishedRun:
    """An experiment as the interpretation shows it: its first finished seed's run, ranked by
    its mean metrics over every finished seed."""

    experiment: ExperimentConfig
    files: RunFiles
    metrics: RunMetrics
    mean: selection.Entry


def finished_runs(config: Config) -> list[FinishedRun]:
    runs = []
    for name, seeds in run_state.finished(config).items():
        run, metrics = seeds[0]
        mean = selection.Entry(metrics.architecture, metrics.frozen,
                               float(np.mean([m.accuracy for _, m in seeds])),
                               float(np.mean([m.macro_f1 for _, m in seeds])))
        runs.append(FinishedRun(run.experiment, RunFiles.of(config.runs_dir, run.name), metrics, mean))
    return runs


def _scored(run: FinishedRun) -> selection.Entry:
    """A run as `selection` ranks it: by its experiment's mean over seeds."""
    return run.mean


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- top losses


def top_losses(predictions: Predictions, n: int = TOP_LOSSES,
               copies: Iterable[list[str]] = ()) -> list[dict[str, Any]]:
    """The `n` validation rows with the highest loss -log p(true class), highest first
    (ties by file order), each photograph once: of a group of `copies` (validation files
    that are copies of each other), only its highest-loss file."""
    p_true = predictions.probabilities[np.arange(len(predictions.files)), predictions.true]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    ids = photographs(predictions.files, copies)
    order, shown = [], set()
    for i in sorted(range(len(loss)), key=lambda i: (-loss[i], i)):
        if ids[i] not in shown and len(order) < n:
            order.append(i)
            shown.add(ids[i])
    return [{"file": predictions.files[i], "true": predictions.classes[predictions.true[i]],
             "predicted": predictions.classes[predictions.predicted[i]],
             "probability": float(predictions.probabilities[i, predictions.predicted[i]]),
             "p_true": float(p_true[i]), "loss": float(loss[i])} for i in order]


def _gallery(run: FinishedRun, roles: list[str], image_root: Path, leaked: set[str], copies: list[list[str]],
             names: dict[str, str], out_dir: Path, report_dir: Path, words: FigureWords) -> dict[str, Any]:
    entry: dict[str, Any] = {"experiment": run.experiment.name, "roles": roles, "file": None, "error": "",
                             "items": []}
    try:
        from monkeyreport import figures
        from monkeyreport.data import load_rgb

        items = top_losses(Predictions.read(run.files.predictions), copies=copies)
        for item in items:
            item["leaked"] = item["file"] in leaked
        cells = [(load_rgb(image_root / item["file"], min_size=256), names.get(item["true"], item["true"]),
                  names.get(item["predicted"], item["predicted"]), item["probability"], item["leaked"])
                 for item in items]
        path = out_dir / f"top_losses_{run.experiment.name}.jpg"
        figures.top_losses_gallery(cells, words, path)
        entry |= {"items": items, "file": path.relative_to(report_dir).as_posix(),
                  "n_leaked": sum(i["leaked"] for i in items)}
    except Exception as exc:  # noqa: BLE001 - recorded; the other figures go on
        entry["error"] = _error(exc)
    return entry


# ----------------------------------------------------------------------------- Grad-CAM


def load_model(run: FinishedRun, trains_on_features: bool):
    """Rebuild the model that made a run's predictions from its checkpoint (the selected
    epoch's under holdout selection, else the last): the whole Classifier of a
    fine-tuned run, or for a frozen run trained on cached features, the backbone from the
    same pretrained source and the head from the checkpoint."""
    import torch

    from monkeyreport.models import create

    m = run.metrics
    source = run.experiment.pretrained if trains_on_features else "none"
    created = create(m.architecture, len(m.classes), source, frozen=m.frozen)
    chosen = run.metrics.selection.get("checkpoint")  # the model behind predictions.csv
    path = run.files.run_dir / chosen if chosen else run.files.checkpoint
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    target = created.model.head if trains_on_features else created.model
    target.load_state_dict(state)
    model = created.model.eval()
    model.requires_grad_(True)  # Grad-CAM needs gradients, also through a frozen backbone
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # in-place activations would overwrite the hooked tensors
    return model


def grad_cam_maps(model: Any, architecture: str, batch: Any,
                  targets: list[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Class-activation maps (N, H, W) in [0, 1] of `batch` for the given classes, taken at
    the architecture's Grad-CAM layer (architectures.py), and that layer's (height, width).

    grad-cam averages the gradient of each class score over the layer's positions into one
    weight per channel, sums the channels so weighted, keeps the positive part (ReLU), scales
    each map to [0, 1] and resizes it bilinearly from the layer's size to the input's."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.backbone.get_submodule(facts(architecture).grad_cam_layer)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(t) for t in targets])
        height, width = cam.activations_and_grads.activations[0].shape[-2:]
    return maps, (int(height), int(width))


def concentration(cam: np.ndarray, fraction: float = TOP_FRACTION) -> float | None:
    """The share of the map's total mass in its `fraction` highest pixels: `fraction` for a
    flat map, 1 when all of it lies there; None for a map without mass."""
    values = np.sort(cam.ravel())[::-1].astype(np.float64)
    total = values.sum()
    if total <= 0:
        return None
    return float(values[:max(1, round(fraction * values.size))].sum() / total)


def agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two maps of one image, pixel by pixel; None when one is flat."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The heat map of `cam` over the uint8 RGB `image` (grad-cam's own blending)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)


def _cam_images(run: FinishedRun, chosen: list[dict[str, Any]], image_root: Path, trains_on_features: bool
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]], tuple[int, int]]:
    import torch

    from monkeyreport.data import load_rgb
    from monkeyreport.datamodule import Preprocessing

    pre = run.metrics.preprocessing
    preprocessing = Preprocessing(pre.resize, pre.crop, tuple(pre.mean), tuple(pre.std))
    transform = preprocessing.crop_transform()
    crops = torch.stack([transform(load_rgb(image_root / c["file"], min_size=pre.resize)) for c in chosen])
    batch = preprocessing.normalize(crops)
    model = load_model(run, trains_on_features)
    targets = [run.metrics.classes.index(c["class"]) for c in chosen]
    maps, size = grad_cam_maps(model, run.metrics.architecture, batch, targets)
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=1).numpy()
    rgb = [c.permute(1, 2, 0).numpy() for c in crops]
    predicted = [{"predicted": run.metrics.classes[int(p.argmax())], "probability": float(p.max()),
                  "p_true": float(p[t]), "correct": int(p.argmax()) == t, "concentration": concentration(m)}
                 for p, t, m in zip(probs, targets, maps)]
    return rgb, list(maps), predicted, size


def choose_cam_images(predictions: list[Predictions], leaked: set[str]) -> list[dict[str, Any]]:
    """One validation image per species, from those without a copy in training (else any):
    for up to half of the species, one that some of the compared models misclassify (the
    species whose image most models miss first, then in class order; within a species, the
    image most models miss, then the first); for the rest, the first image every model gets
    right (else the first). `wrong`: how many of the models' predictions.csv miss it."""
    first = predictions[0]
    wrong: dict[str, int] = {}
    for p in predictions:
        for f, t, y in zip(p.files, p.true, p.predicted):
            wrong[f] = wrong.get(f, 0) + int(t != y)
    pools = []
    for k, code in enumerate(first.classes):
        files = [f for f, t in zip(first.files, first.true) if t == k]
        pool = [f for f in files if f not in leaked] or files
        if pool:
            pools.append((code, pool, max(pool, key=lambda f: wrong[f])))  # max keeps the first of ties
    with_errors = sorted((i for i, (_, _, f) in enumerate(pools) if wrong[f]), key=lambda i: -wrong[pools[i][2]])
    shown_wrong = set(with_errors[:len(pools) // 2])
    chosen = []
    for i, (code, pool, missed) in enumerate(pools):
        file = missed if i in shown_wrong else next((f for f in pool if not wrong[f]), pool[0])
        chosen.append({"file": file, "class": code, "wrong": wrong[file]})
    return chosen


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _agreement_level(r: float | None) -> str | None:
    if r is None:
        return None
    return next((level for bound, level in AGREEMENT_LEVELS if r >= bound), "low")


def cam_summary(panel: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """What the text says of one model's maps: how many of its predictions are right, how many
    maps are empty (no position pushes towards the true species), the mean concentration over
    all, right and wrong images; against the `reference` panel (the first
    one drawn, another model on the same images), the mean agreement of their maps over all
    images, those both get right and those at least one misses, its level, and on how many
    images this panel's map is the more concentrated."""
    shown = panel["predictions"]
    summary: dict[str, Any] = {
        "n": len(shown), "n_correct": sum(p["correct"] for p in shown),
        "n_empty": sum(p["concentration"] is None for p in shown),
        "concentration": _mean([p["concentration"] for p in shown]),
        "concentration_correct": _mean([p["concentration"] for p in shown if p["correct"]]),
        "concentration_wrong": _mean([p["concentration"] for p in shown if not p["correct"]]),
    }
    if reference is not None and panel["agreement"]:
        both = [p["correct"] and q["correct"] for p, q in zip(shown, reference["predictions"])]
        r = panel["agreement"]
        summary |= {"agreement": _mean(r), "agreement_min": min((v for v in r if v is not None), default=None),
                    "agreement_max": max((v for v in r if v is not None), default=None),
                    "agreement_both_correct": _mean([v for v, ok in zip(r, both) if ok]),
                    "agreement_any_wrong": _mean([v for v, ok in zip(r, both) if not ok]),
                    "n_any_wrong": both.count(False),
                    "more_concentrated": sum(p["concentration"] is not None and q["concentration"] is not None
                                             and p["concentration"] > q["concentration"]
                                             for p, q in zip(shown, reference["predictions"]))}
        summary["agreement_level"] = _agreement_level(summary["agreement"])
    return summary


def _grad_cam(runs: list[FinishedRun], image_root: Path, leaked: set[str], names: dict[str, str],
              out_dir: Path, report_dir: Path, words: FigureWords) -> dict[str, Any] | None:
    transfer = selection.transfers(runs, _scored)
    best = selection.best(transfer, _scored)
    if best is None:
        return None
    arch = best.metrics.architecture
    members = sorted((r for r in transfer if r.metrics.architecture == arch), key=lambda r: not r.metrics.frozen)
    entry: dict[str, Any] = {"architecture": arch, "title": best.metrics.architecture_title,
                             "target_layer": "", "map_size": None, "input_size": None, "top_fraction": TOP_FRACTION,
                             "agreement_levels": {level: bound for bound, level in AGREEMENT_LEVELS},
                             "reference": None, "file": None, "error": "", "images": [], "panels": []}
    try:
        entry["target_layer"] = facts(arch).grad_cam_label
        recorded = [Predictions.read(r.files.predictions) for r in members]
        chosen = choose_cam_images(recorded, leaked)
        entry["images"] = chosen
        columns = []
        rgb = None
        reference = None  # the first panel drawn, (panel, maps): the others' maps are compared with it
        for run, run_predictions in zip(members, recorded):
            panel = {"experiment": run.experiment.name, "frozen": run.metrics.frozen,
                     "label": panel_label(run.experiment, [r.experiment for r in members], words),
                     "pretrained": run.metrics.pretrained, "random_weights": run.metrics.pretrained == "none",
                     "error": "", "predictions": [], "agreement": []}
            try:
                started = RunStart.read(run.files.started)
                crops, maps, predicted, size = _cam_images(run, chosen, image_root,
                                                           bool(started and started.trains_on_features))
                rgb = rgb or crops
                entry["map_size"], entry["input_size"] = list(size), list(crops[0].shape[:2])
                panel["predictions"] = predicted
                if reference is None:
                    reference = (panel, maps)
                    entry["reference"] = panel["experiment"]
                else:
                    panel["agreement"] = [agreement(a, b) for a, b in zip(reference[1], maps)]
                panel["summary"] = cam_summary(panel, reference[0] if reference[0] is not panel else None)
                # Recomputed here in fp32; training may have predicted in another precision.
                was = dict(zip(run_predictions.files, (run_predictions.classes[k] for k in run_predictions.predicted)))
                panel["summary"]["n_changed"] = sum(p["predicted"] != was.get(c["file"]) for p, c in zip(predicted, chosen))
                columns.append((panel["label"],
                                [overlay(image, m) for image, m in zip(crops, maps)],
                                [(names.get(p["predicted"], p["predicted"]), p["probability"], p["correct"],
                                  p["concentration"], r) for p, r in zip(predicted, panel["agreement"] or
                                                                         [None] * len(predicted))]))
            except Exception as exc:  # noqa: BLE001 - this model's panel is missing, the other stays
                panel["error"] = _error(exc)
            entry["panels"].append(panel)
        if not columns:
            entry["error"] = "; ".join(f"{p['experiment']}: {p['error']}" for p in entry["panels"])
            return entry
        from monkeyreport import figures

        path = out_dir / f"gradcam_{arch}.jpg"
        figures.grad_cam_grid([names.get(c["class"], c["class"]) for c in chosen], rgb, columns, path,
                              words=words)
        entry["file"] = path.relative_to(report_dir).as_posix()
    except Exception as exc:  # noqa: BLE001
        entry["error"] = _error(exc)
    return entry


# ----------------------------------------------------------------------------- leakage


def leakage_pairs(eda: EdaSummary, n: int = LEAKAGE_PAIRS) -> list[dict[str, Any]]:
    """Up to `n` training/validation duplicate pairs, exact copies first, varied species."""
    pairs = []
    for g in eda.duplicates["groups"]:
        if not g["cross_split"]:
            continue
        train = next(f for f in g["files"] if f["split"] == "training")
        val = next(f for f in g["files"] if f["split"] == "validation")
        pairs.append({"training": train["file"], "validation": val["file"], "class": val["class"],
                      "kind": g["kind"]})
    pairs.sort(key=lambda p: p["kind"] != "exact")
    chosen, seen = [], set()
    for p in pairs:  # one per species first, then the rest
        if p["class"] not in seen:
            chosen.append(p)
            seen.add(p["class"])
    chosen += [p for p in pairs if p not in chosen]
    return chosen[:n]


def _leakage(eda: EdaSummary, image_root: Path, names: dict[str, str], out_dir: Path,
             report_dir: Path, words: FigureWords) -> dict[str, Any] | None:
    pairs = leakage_pairs(eda)
    if not pairs:
        return None
    entry: dict[str, Any] = {"pairs": pairs, "file": None, "error": ""}
    try:
        from monkeyreport import figures
        from monkeyreport.data import load_rgb

        cells = [(load_rgb(image_root / p["training"], min_size=256), load_rgb(image_root / p["validation"], min_size=256),
                  names.get(p["class"], p["class"]), Path(p["training"]).name, Path(p["validation"]).name)
                 for p in pairs]
        path = out_dir / "leakage_pairs.jpg"
        figures.leakage_pairs(cells, words, path)
        entry["file"] = path.relative_to(report_dir).as_posix()
    except Exception as exc:  # noqa: BLE001
        entry["error"] = _error(exc)
    return entry


# ----------------------------------------------------------------------------- the stage


def _image_root(config: Config, eda: EdaSummary) -> Path:
    """The dataset layout root that predictions.csv and eda.json name files from."""
    from monkeyreport.data import locate

    try:
        return locate(resolve_data_root(config)).root
    except Exception:  # noqa: BLE001 - no dataset at hand: where the EDA found it
        return Path(eda.dataset_root)


def run_interpretation(config: Config, templates_dir: Path | None = None) -> Interpretation:
    """Write report/interpret/ and return what interpret.json holds; never stops on one
    failure. `templates_dir`: where the species table and the figure words are (default: as
    `render` finds its templates)."""
    report = ReportFiles(config.report_dir)
    if not report.eda.is_file():
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    eda = EdaSummary.read(report.eda)
    names = species_names(eda, templates_dir)
    words = figure_words(templates_dir or templates_for(Path.cwd()))
    leaked = eda.leaked_validation_files
    image_root = _image_root(config, eda)
    out_dir = report.interpret_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = finished_runs(config)
    import torch

    threads = torch.get_num_threads()
    # One thread: these few small batches gain nothing from more, and on a busy machine torch's
    # spinning worker threads made a Grad-CAM pass 20 times slower.
    torch.set_num_threads(1)
    try:
        data = _explain(config, runs, eda, names, words, leaked, image_root, out_dir)
    finally:
        torch.set_num_threads(threads)
    data.write(report.interpretation)
    return data


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's interpret stage; a figure that cannot be drawn is a note, not a failure."""
    start = time.perf_counter()
    problems = figure_problems(run_interpretation(config, options.templates))
    state = f"{len(problems)} figure(s) missing: {'; '.join(problems)}" if problems else "all figures drawn"
    return StageOutcome(f"interpret {timed(start)}, {state} -> {ReportFiles(config.report_dir).interpretation}")


def _explain(config: Config, runs: list[FinishedRun], eda: EdaSummary, names: dict[str, str], words: FigureWords,
             leaked: set[str], image_root: Path, out_dir: Path) -> Interpretation:
    galleries = []
    best = selection.best(runs, _scored)
    baseline = next(iter(selection.baselines(runs, _scored)), None)
    for run in [r for i, r in enumerate((best, baseline)) if r is not None and (i == 0 or r is not best)]:
        roles = [role for role, r in (("best", best), ("baseline", baseline)) if r is run]
        galleries.append(_gallery(run, roles, image_root, leaked, eda.validation_copies, names, out_dir,
                                  config.report_dir, words))
    return Interpretation(galleries=galleries,
                          gradcam=_grad_cam(runs, image_root, leaked, names, out_dir, config.report_dir, words),
                          leakage=_leakage(eda, image_root, names, out_dir, config.report_dir, words))


def figure_problems(data: Interpretation) -> list[str]:
    """One English line per figure or panel that could not be made."""
    problems = [f"top losses of {g['experiment']}: {g['error']}" for g in data.galleries if g["error"]]
    if data.gradcam:
        problems += [f"Grad-CAM of {p['experiment']}: {p['error']}" for p in data.gradcam["panels"] if p["error"]]
        if data.gradcam["error"] and not any(p["error"] for p in data.gradcam["panels"]):
            problems.append(f"Grad-CAM: {data.gradcam['error']}")
    if data.leakage and data.leakage["error"]:
        problems.append(f"leakage pairs: {data.leakage['error']}")
    return problems
