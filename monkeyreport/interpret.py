"""Interpretation stage: where the networks fail and what they look at.

Runs after training, reads only result files (runs/<experiment>/, report/eda/eda.json) and
the dataset's images, and writes report/interpret/: `interpret.json` (what each figure
shows, or why it is missing) and the figures themselves:

- top losses: the validation images with the highest loss, -log p(true class) taken from
  predictions.csv, of the best experiment and of the baseline (architectures.py's role);
- Grad-CAM (package grad-cam) of the best transfer-learning architecture, frozen and
  fine-tuned side by side, one validation image per species;
- leakage: training/validation duplicate pairs (eda.json groups with `cross_split`).

Whether it runs is the pipeline's decision (pipeline.py); one explanation failing
records its reason in the JSON and leaves the other figures intact. `render` only reads
what is here (context.interpretation_view), so it never imports torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monkeyreport import run_state, selection
from monkeyreport.architectures import facts
from monkeyreport.config import Config, ExperimentConfig, resolve_data_root
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome, timed
from monkeyreport.results import EdaSummary, Interpretation, Predictions, ReportFiles, RunFiles, RunMetrics, RunStart
from monkeyreport.report_figures import panel_label
from monkeyreport.species import species_names

TOP_LOSSES = 12  # images per top-loss gallery
LEAKAGE_PAIRS = 4  # training/validation pairs shown


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


def top_losses(predictions: Predictions, n: int = TOP_LOSSES) -> list[dict[str, Any]]:
    """The `n` validation rows with the highest loss -log p(true class), highest first
    (ties by file order)."""
    p_true = predictions.probabilities[np.arange(len(predictions.files)), predictions.true]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    order = sorted(range(len(loss)), key=lambda i: (-loss[i], i))[:n]
    return [{"file": predictions.files[i], "true": predictions.classes[predictions.true[i]],
             "predicted": predictions.classes[predictions.predicted[i]],
             "probability": float(predictions.probabilities[i, predictions.predicted[i]]),
             "p_true": float(p_true[i]), "loss": float(loss[i])} for i in order]


def _gallery(run: FinishedRun, roles: list[str], image_root: Path, leaked: set[str],
             names: dict[str, str], out_dir: Path, report_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"experiment": run.experiment.name, "roles": roles, "file": None, "error": "",
                             "items": []}
    try:
        from monkeyreport import figures
        from monkeyreport.data import load_rgb

        items = top_losses(Predictions.read(run.files.predictions))
        for item in items:
            item["leaked"] = item["file"] in leaked
        cells = [(load_rgb(image_root / item["file"], min_size=256), names.get(item["true"], item["true"]),
                  names.get(item["predicted"], item["predicted"]), item["probability"], item["leaked"])
                 for item in items]
        path = out_dir / f"top_losses_{run.experiment.name}.jpg"
        figures.top_losses_gallery(cells, path)
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


def grad_cam_maps(model: Any, architecture: str, batch: Any, targets: list[int]) -> np.ndarray:
    """Class-activation maps (N, H, W) in [0, 1] of `batch` for the given classes, taken at
    the architecture's Grad-CAM layer (architectures.py)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.backbone.get_submodule(facts(architecture).grad_cam_layer)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        return cam(input_tensor=batch, targets=[ClassifierOutputTarget(t) for t in targets])


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The heat map of `cam` over the uint8 RGB `image` (grad-cam's own blending)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)


def _cam_images(run: FinishedRun, chosen: list[dict[str, Any]], image_root: Path,
                trains_on_features: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
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
    maps = grad_cam_maps(model, run.metrics.architecture, batch, targets)
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=1).numpy()
    rgb = [c.permute(1, 2, 0).numpy() for c in crops]
    predicted = [{"predicted": run.metrics.classes[int(p.argmax())], "probability": float(p.max()),
                  "p_true": float(p[t])} for p, t in zip(probs, targets)]
    return rgb, list(maps), predicted


def _one_per_species(predictions: Predictions, leaked: set[str]) -> list[dict[str, Any]]:
    """The first validation image of each species without a copy in training (else the first)."""
    chosen = []
    for k, code in enumerate(predictions.classes):
        files = [f for f, t in zip(predictions.files, predictions.true) if t == k]
        clean = [f for f in files if f not in leaked]
        if files:
            chosen.append({"file": (clean or files)[0], "class": code})
    return chosen


def _grad_cam(runs: list[FinishedRun], image_root: Path, leaked: set[str], names: dict[str, str],
              out_dir: Path, report_dir: Path) -> dict[str, Any] | None:
    transfer = selection.transfers(runs, _scored)
    best = selection.best(transfer, _scored)
    if best is None:
        return None
    arch = best.metrics.architecture
    members = sorted((r for r in transfer if r.metrics.architecture == arch), key=lambda r: not r.metrics.frozen)
    entry: dict[str, Any] = {"architecture": arch, "title": best.metrics.architecture_title,
                             "target_layer": "", "file": None, "error": "", "images": [], "panels": []}
    try:
        entry["target_layer"] = facts(arch).grad_cam_label
        chosen = _one_per_species(Predictions.read(best.files.predictions), leaked)
        entry["images"] = chosen
        columns = []
        rgb = None
        for run in members:
            panel = {"experiment": run.experiment.name, "frozen": run.metrics.frozen,
                     "label": panel_label(run.experiment, [r.experiment for r in members]),
                     "pretrained": run.metrics.pretrained, "random_weights": run.metrics.pretrained == "none",
                     "error": "", "predictions": []}
            try:
                started = RunStart.read(run.files.started)
                crops, maps, predicted = _cam_images(run, chosen, image_root,
                                                     bool(started and started.trains_on_features))
                rgb = rgb or crops
                panel["predictions"] = predicted
                columns.append((panel["label"],
                                [overlay(image, m) for image, m in zip(crops, maps)],
                                [(names.get(p["predicted"], p["predicted"]), p["probability"]) for p in predicted]))
            except Exception as exc:  # noqa: BLE001 - this model's panel is missing, the other stays
                panel["error"] = _error(exc)
            entry["panels"].append(panel)
        if not columns:
            entry["error"] = "; ".join(f"{p['experiment']}: {p['error']}" for p in entry["panels"])
            return entry
        from monkeyreport import figures

        path = out_dir / f"gradcam_{arch}.jpg"
        figures.grad_cam_grid([names.get(c["class"], c["class"]) for c in chosen], rgb, columns, path)
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
             report_dir: Path) -> dict[str, Any] | None:
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
        figures.leakage_pairs(cells, path)
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
    failure. `templates_dir`: where the species table is (default: as `render` finds its
    templates)."""
    report = ReportFiles(config.report_dir)
    if not report.eda.is_file():
        raise MonkeyReportError(f"{report.eda}: not found; run `monkeyreport eda` first")
    eda = EdaSummary.read(report.eda)
    names = species_names(eda, templates_dir)
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
        data = _explain(config, runs, eda, names, leaked, image_root, out_dir)
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


def _explain(config: Config, runs: list[FinishedRun], eda: EdaSummary, names: dict[str, str],
             leaked: set[str], image_root: Path, out_dir: Path) -> Interpretation:
    galleries = []
    best = selection.best(runs, _scored)
    baseline = next(iter(selection.baselines(runs, _scored)), None)
    for run in [r for i, r in enumerate((best, baseline)) if r is not None and (i == 0 or r is not best)]:
        roles = [role for role, r in (("best", best), ("baseline", baseline)) if r is run]
        galleries.append(_gallery(run, roles, image_root, leaked, names, out_dir, config.report_dir))
    return Interpretation(galleries=galleries,
                          gradcam=_grad_cam(runs, image_root, leaked, names, out_dir, config.report_dir),
                          leakage=_leakage(eda, image_root, names, out_dir, config.report_dir))


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
