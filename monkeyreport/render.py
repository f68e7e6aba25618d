"""The Spanish report: template context from result files, Jinja environment, HTML and PDF.

Inputs are files only: report/eda/eda.json, runs/<experiment>/{metrics,failed}.json and
history.csv, report/models/<architecture>.json and the config. This module never imports
torch (nor models, training or datamodule), so revising the text is fast and works on a
machine that only holds the results.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monkeyreport import results
from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
MAIN_TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
FORMATS = ("html", "pdf", "both")
DIAGRAM_ARCHITECTURES = {"alexnet": 2, "resnet34": 3, "efficientnet_b0": 4}
FAILED_TO_LEARN_FACTOR = 1.5  # accuracy below 1.5 / number of classes: the model did not learn
MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
          "septiembre", "octubre", "noviembre", "diciembre")

# Literature and dataset facts (REPORT_SPEC.md), not results.
SPECIES = {
    "n0": ("Alouatta palliata", "mono aullador de manto"),
    "n1": ("Erythrocebus patas", "mono patas (mono rojo)"),
    "n2": ("Cacajao calvus", "uacarí calvo"),
    "n3": ("Macaca fuscata", "macaco japonés"),
    "n4": ("Cebuella pygmaea", "tití pigmeo"),
    "n5": ("Cebus capucinus", "capuchino de cara blanca (mono carablanca)"),
    "n6": ("Mico argentatus", "tití plateado"),
    "n7": ("Saimiri sciureus", "mono ardilla común"),
    "n8": ("Aotus nigriceps", "mono nocturno de cabeza negra"),
    "n9": ("Trachypithecus johnii", "langur de Nilgiri"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
HEADS = {  # architecture -> head as the report describes it (mirrors models.py registry)
    "vanilla_cnn": "capa oculta de 256 unidades con ReLU y capa de salida 256 → 10",
    "alexnet": "capa oculta de 1024 unidades con ReLU y dropout del 40 %, salida 1024 → 10",
    "resnet34": "capa oculta de 256 unidades con ReLU, salida 256 → 10",
    "efficientnet_b0": "capa oculta de 512 unidades con ReLU, salida 512 → 10",
    "efficientnet_lite0": "capa oculta de 512 unidades con ReLU, salida 512 → 10",
}
BACKBONES = {
    "vanilla_cnn": "tres bloques Conv (5×5) → ReLU → MaxPool con 32, 64 y 128 filtros, "
                   "seguidos de un pooling adaptativo a 6×6 y una capa flatten",
    "alexnet": "las capas convolucionales de AlexNet de torchvision (5 convoluciones con ReLU "
               "y max pooling) y su pooling adaptativo a 6×6",
    "resnet34": "ResNet34 de timm sin su clasificador: 34 capas con conexiones residuales "
                "organizadas en cuatro etapas, y pooling global",
    "efficientnet_b0": "EfficientNet-B0 de timm sin su clasificador: bloques MBConv en siete "
                       "etapas, una convolución final de 1280 canales y pooling global",
    "efficientnet_lite0": "EfficientNet-Lite0 de timm sin su clasificador",
}


class TemplateProblem(MonkeyReportError):
    """A template cannot be compiled or rendered; the message names file and line."""


@dataclass(frozen=True)
class RenderOutcome:
    outputs: list[Path]
    skipped: bool
    seconds: float
    pending: list[str]
    failed: list[str]

    def summary(self) -> str:
        verb = "unchanged, skipped" if self.skipped else f"done in {self.seconds:.1f} s"
        extra = ""
        if self.pending:
            extra += f", {len(self.pending)} pending"
        if self.failed:
            extra += f", {len(self.failed)} failed"
        return f"render {verb}{extra} -> {', '.join(str(p) for p in self.outputs)}"


# ----------------------------------------------------------------------------- inputs


def _fmt4(x: float) -> str:
    return f"{x:.4f}"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}".replace(".", ",") + " M"


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", ".")


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            try:
                rows.append({k: float(v) for k, v in row.items()})
            except (TypeError, ValueError):
                raise MonkeyReportError(f"{path}: malformed row {row}") from None
        return rows


def _experiment_rows(config: Config) -> list[dict[str, Any]]:
    rows = []
    for exp in config.experiments:
        run_dir = config.runs_dir / exp.name
        metrics = results.read_json_if_exists(run_dir / "metrics.json")
        failed = results.read_json_if_exists(run_dir / "failed.json")
        status = "ok" if metrics else ("failed" if failed else "pending")
        row: dict[str, Any] = {
            "name": exp.name, "label": exp.label, "architecture": exp.architecture,
            "frozen": exp.frozen, "pretrained": exp.pretrained, "status": status,
            "frozen_text": "-" if exp.architecture == "vanilla_cnn" else ("Yes" if exp.frozen else "No"),
            "variant": "" if exp.architecture == "vanilla_cnn" else ("congelado" if exp.frozen else "fine-tuning"),
            "metrics": metrics, "reason": (failed or {}).get("reason", ""),
            "history": _read_history(run_dir / "history.csv") if metrics else [],
            "best": False,
        }
        if metrics:
            row.update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                       accuracy_text=_fmt4(metrics["accuracy"]), macro_f1_text=_fmt4(metrics["macro_f1"]),
                       pretrained=metrics.get("pretrained", exp.pretrained))
        else:
            row.update(accuracy=None, macro_f1=None,
                       accuracy_text="pendiente" if status == "pending" else "falló",
                       macro_f1_text="pendiente" if status == "pending" else "falló")
        row["long_label"] = f"{exp.label} ({row['variant']})" if row["variant"] else exp.label
        rows.append(row)
    done = [r for r in rows if r["status"] == "ok"]
    if done:
        best = max(done, key=lambda r: (r["accuracy"], r["macro_f1"]))
        for r in done:
            r["best"] = (r["accuracy"], r["macro_f1"]) == (best["accuracy"], best["macro_f1"])
    return rows


def _random_weights(rows: list[dict[str, Any]]) -> bool:
    """True when a transfer-learning experiment starts from random instead of pretrained weights."""
    return any(r["architecture"] != "vanilla_cnn" and r["pretrained"] == "none" for r in rows)


# ----------------------------------------------------------------------------- conclusions


def conclusions(rows: list[dict[str, Any]], num_classes: int, leakage: int) -> list[str]:
    """Bullet points, each backed by the numbers in `rows`; nothing else is claimed."""
    done = [r for r in rows if r["status"] == "ok"]
    out: list[str] = []
    if not done:
        return ["Todavía no hay resultados de entrenamiento, por lo que no se extraen conclusiones."]
    best = [r for r in done if r["best"]]
    if len(done) > 1:
        names = " y ".join(r["long_label"] for r in best)
        out.append(f"El mejor resultado lo obtuvo {names}, con un accuracy de {best[0]['accuracy_text']} "
                   f"y un macro F1-score de {best[0]['macro_f1_text']} en validación.")
    else:
        r = done[0]
        out.append(f"Solo se dispone del resultado de {r['long_label']}: accuracy "
                   f"{r['accuracy_text']}, macro F1-score {r['macro_f1_text']}.")
    by_arch: dict[str, dict[bool, dict[str, Any]]] = {}
    for r in done:
        if r["architecture"] != "vanilla_cnn":
            by_arch.setdefault(r["architecture"], {})[r["frozen"]] = r
    for pair in by_arch.values():
        if True in pair and False in pair:
            fz, ft = pair[True], pair[False]
            title = fz["label"]
            if fz["accuracy"] > ft["accuracy"]:
                verdict = "congelar el backbone dio mejor resultado que el fine-tuning"
            elif fz["accuracy"] < ft["accuracy"]:
                verdict = "el fine-tuning superó a la variante con el backbone congelado"
            else:
                verdict = "ambas variantes obtuvieron el mismo accuracy"
            out.append(f"En {title}, {verdict} (accuracy {fz['accuracy_text']} congelado frente a "
                       f"{ft['accuracy_text']} con fine-tuning).")
    vanilla = [r for r in done if r["architecture"] == "vanilla_cnn"]
    transfer = [r for r in done if r["architecture"] != "vanilla_cnn"]
    if vanilla and transfer:
        v = vanilla[0]
        better = [r for r in transfer if r["accuracy"] > v["accuracy"]]
        out.append(f"Como línea base, la VanillaCNN alcanzó un accuracy de {v['accuracy_text']}; "
                   f"{len(better)} de los {len(transfer)} modelos con transfer learning la superaron.")
    # Parameters vs accuracy: one point per architecture (its best variant); a trend needs
    # at least three distinct architectures to be worth stating.
    best_per_arch: dict[str, dict[str, Any]] = {}
    for r in done:
        if r["metrics"].get("params_total"):
            current = best_per_arch.get(r["architecture"])
            if current is None or r["accuracy"] > current["accuracy"]:
                best_per_arch[r["architecture"]] = r
    with_params = list(best_per_arch.values())
    if len(with_params) >= 3:
        ranked = sorted(with_params, key=lambda r: r["metrics"]["params_total"])
        rho = _spearman([r["metrics"]["params_total"] for r in ranked], [r["accuracy"] for r in ranked])
        largest, smallest = ranked[-1], ranked[0]
        if rho is not None and rho >= 0.7:
            trend = "los modelos con más parámetros tendieron a obtener mayor accuracy"
        elif rho is not None and rho <= -0.7:
            trend = "los modelos con más parámetros tendieron a obtener menor accuracy"
        else:
            trend = "el número de parámetros no determinó el accuracy"
        out.append(f"Entre parámetros y resultado, {trend} (correlación de Spearman {rho:.2f}; "
                   f"el modelo más grande, {largest['long_label']}, tiene "
                   f"{_millions(largest['metrics']['params_total'])} de parámetros y el más pequeño, "
                   f"{smallest['long_label']}, {_millions(smallest['metrics']['params_total'])}).")
    threshold = FAILED_TO_LEARN_FACTOR / num_classes if num_classes else 0
    for r in done:
        if r["accuracy"] < threshold:
            out.append(f"{r['long_label']} no aprendió a clasificar: su accuracy de {r['accuracy_text']} "
                       f"está cerca del azar (1/{num_classes} = {1 / num_classes:.2f}).")
    for r in rows:
        if r["status"] == "failed":
            out.append(f"El experimento {r['long_label']} falló y no tiene resultados: {r['reason']}")
        elif r["status"] == "pending":
            out.append(f"El experimento {r['long_label']} está pendiente; sus resultados no se incluyen.")
    if leakage:
        out.append(f"Los valores de validación están inflados: {leakage} imágenes de validación "
                   "tienen un duplicado en el conjunto de entrenamiento.")
    return out


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else None


# ----------------------------------------------------------------------------- figures


def _figures(config: Config, eda: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Draw (when changed) every report figure; return figure entries keyed by role."""
    from monkeyreport import figures

    report_dir = config.report_dir
    fig_dir = report_dir / "figures"
    names = [c["display_name"] for c in eda["classes"]]
    entries: dict[str, Any] = {}

    def entry(key: str, number: int, caption: str, rel: str | None, note: str = "") -> None:
        entries[key] = {"number": number, "caption": caption, "src": rel, "note": note}

    figures.draw_if_changed(fig_dir / "cnn_schematic.png", figures.inputs_digest("cnn"), figures.cnn_schematic)
    entry("cnn", 1, "Esquema de una red convolucional: convolución, pooling, flatten y capas "
          "fully connected.", "figures/cnn_schematic.png")
    for arch, number in DIAGRAM_ARCHITECTURES.items():
        summary = results.read_json_if_exists(report_dir / "models" / f"{arch}.json")
        caption = (f"Arquitectura de {summary['title'] if summary else arch} generada a partir del "
                   "modelo instanciado (etapas, forma de salida y parámetros; entrada 3×224×224).")
        if summary:
            rel = f"figures/arch_{arch}.png"
            figures.draw_if_changed(report_dir / rel, figures.inputs_digest(summary),
                                    figures.architecture_diagram, summary)
            entry(arch, number, caption, rel)
        else:
            entry(arch, number, caption, None,
                  f"Falta el resumen report/models/{arch}.json; ejecute «monkeyreport build» para generarlo.")
    figures.draw_if_changed(fig_dir / "transfer_learning.png", figures.inputs_digest("tl"),
                            figures.transfer_learning_scheme)
    entry("transfer", 5, "Esquema de transfer learning: un backbone preentrenado en ImageNet se "
          "reutiliza con una cabeza nueva para las diez especies.", "figures/transfer_learning.png")
    eda_figs = eda.get("figures", {})
    for key, number, caption in (
        ("class_distribution", 6, "Número de imágenes por clase: entrenamiento (izquierda) y "
         "validación (derecha)."),
        ("sample_grid", 7, "Ejemplos de imágenes de entrenamiento por especie."),
    ):
        rel = eda_figs.get(key)
        ok = bool(rel) and (report_dir / rel).is_file()
        entry(key, number, caption, rel if ok else None,
              "" if ok else "La figura del análisis exploratorio no está en disco; ejecute «monkeyreport eda».")

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["architecture"], []).append(r)
    cms = []
    for i, (arch, members) in enumerate(groups.items()):
        number = 8 + i
        title = members[0]["label"]
        done = [r for r in members if r["status"] == "ok"]
        missing = [r for r in members if r["status"] != "ok"]
        if len(members) > 1:
            caption = (f"Matrices de confusión de {title}: " +
                       ", ".join(f"{'backbone congelado' if r['frozen'] else 'fine-tuning'} "
                                 f"({'izquierda' if j == 0 else 'derecha'})" for j, r in enumerate(members)) + ".")
        else:
            caption = f"Matriz de confusión de {title} en validación."
        note = " ".join(f"{r['long_label']}: {'pendiente' if r['status'] == 'pending' else 'falló'}, "
                        "sin matriz de confusión." for r in missing)
        rel = None
        if done:
            rel = f"figures/confusion_{arch}.png"
            panels = [((("Backbone congelado" if r["frozen"] else "Fine-tuning") if len(members) > 1
                        else r["label"]), r["metrics"]["confusion_matrix"]) for r in done]
            figures.draw_if_changed(report_dir / rel, figures.inputs_digest(panels, names),
                                    figures.confusion_matrices, panels, names)
        cms.append({"number": number, "caption": caption, "src": rel, "note": note,
                    "panels": len(done)})
    entries["confusion"] = cms
    curves_number = 8 + len(groups)
    histories = [(r["long_label"], r["history"]) for r in rows if r["status"] == "ok" and r["history"]]
    rel = None
    if histories:
        rel = "figures/training_curves.png"
        figures.draw_if_changed(report_dir / rel, figures.inputs_digest(histories),
                                figures.training_curves, histories)
    entry("curves", curves_number, "Curvas de entrenamiento por experimento: pérdida de "
          "entrenamiento y validación (eje izquierdo) y accuracy de validación (eje derecho).", rel,
          "" if rel else "No hay historiales de entrenamiento disponibles.")
    return entries


# ----------------------------------------------------------------------------- context


def build_context(config: Config, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The template context; `rows` are the experiment rows from `_experiment_rows`."""
    report_dir = config.report_dir
    eda_file = report_dir / "eda" / "eda.json"
    eda = results.read_json_if_exists(eda_file)
    if eda is None:
        raise MonkeyReportError(f"{eda_file}: not found; run `monkeyreport eda` first")
    classes = [{"code": c["code"], "latin": SPECIES.get(c["code"], (c["display_name"], ""))[0],
                "common": SPECIES.get(c["code"], ("", c["common_name"].replace("_", " ")))[1],
                "display_name": c["display_name"]} for c in eda["classes"]]
    num_classes = len(classes)
    dup = eda["duplicates"]
    leakage = dup["n_validation_files_in_cross_split_groups"]
    now = datetime.now()
    done = [r for r in rows if r["status"] == "ok"]
    any_metrics = done[0]["metrics"] if done else {}
    pre = any_metrics.get("preprocessing", {})
    archs: list[dict[str, Any]] = []
    for arch in dict.fromkeys(r["architecture"] for r in rows):
        members = [r for r in rows if r["architecture"] == arch]
        measured = [r for r in members if r["status"] == "ok"]
        frozen = [r for r in measured if r["frozen"]]
        archs.append({
            "name": arch, "title": measured[0]["metrics"]["architecture_title"] if measured else members[0]["label"],
            "backbone": BACKBONES.get(arch, "backbone del registro de modelos"),
            "head": HEADS.get(arch, "cabeza lineal"),
            "params_total": _thousands(measured[0]["metrics"]["params_total"]) if measured else None,
            "params_total_m": _millions(measured[0]["metrics"]["params_total"]) if measured else None,
            "params_trainable_frozen": _thousands(frozen[0]["metrics"]["params_trainable"]) if frozen else None,
        })
    versions = any_metrics.get("versions", {})
    repro_rows = [{"label": r["long_label"], "status": r["status"],
                   "epochs": r["metrics"]["epochs"] if r["metrics"] else None,
                   "seconds": f"{r['metrics']['train_seconds']:.1f}".replace(".", ",") if r["metrics"] else None,
                   "device": r["metrics"]["device"] if r["metrics"] else None,
                   "weights": r["metrics"].get("weights") if r["metrics"] else None,
                   "n_train": r["metrics"].get("n_train") if r["metrics"] else None,
                   "n_val": r["metrics"].get("n_val") if r["metrics"] else None} for r in rows]
    comparison = []
    for r in rows:
        orig = ORIGINAL_RESULTS.get((r["architecture"], r["frozen"] if r["architecture"] != "vanilla_cnn" else False))
        comparison.append({"label": r["label"], "frozen_text": r["frozen_text"],
                           "accuracy_text": r["accuracy_text"], "macro_f1_text": r["macro_f1_text"],
                           "orig_accuracy": _fmt4(orig[0]) if orig else "-",
                           "orig_macro_f1": _fmt4(orig[1]) if orig else "-"})
    config_text = ""
    if config.source and Path(config.source).is_file():
        config_text = Path(config.source).read_text(encoding="utf-8")
    sizes = eda["image_sizes"]
    return {
        "title": "Reporte 4: Convolutional Neural Networks",
        "subtitle": "Clasificación de especies de monos con redes convolucionales y transfer learning",
        "date": f"{now.day} de {MONTHS[now.month - 1]} de {now.year}",
        "random_weights": _random_weights(rows),
        "subset": config.training.max_images_per_class,
        "config_source": config.source or "(sin archivo)",
        "config_text": config_text,
        "seed": config.seed,
        "eda": eda,
        "classes": classes,
        "num_classes": num_classes,
        "train_total": eda["splits"]["training"]["total"],
        "val_total": eda["splits"]["validation"]["total"],
        "splits": eda["splits"],
        "sizes": sizes,
        "formats": eda["formats"],
        "extensions": eda["extensions"],
        "odd_files": eda["odd_files"],
        "unreadable": eda["unreadable"],
        "dup": dup,
        "leakage": leakage,
        "dataset_problems": eda["dataset_problems"],
        "training": {
            "epochs": config.training.epochs, "batch_size": config.training.batch_size,
            "learning_rate": config.training.learning_rate, "resize": pre.get("resize", config.training.resize),
            "crop": pre.get("crop", config.training.crop),
            "mean": ", ".join(f"{v:.3f}" for v in pre.get("mean", IMAGENET_MEAN)),
            "std": ", ".join(f"{v:.3f}" for v in pre.get("std", IMAGENET_STD)),
            "max_images_per_class": config.training.max_images_per_class,
        },
        "experiments": rows,
        "architectures": archs,
        "pending": [r["long_label"] for r in rows if r["status"] == "pending"],
        "failed": [r for r in rows if r["status"] == "failed"],
        "conclusions": conclusions(rows, num_classes, leakage),
        "figures": _figures(config, eda, rows),
        "versions": versions,
        "repro": repro_rows,
        "fingerprint": eda.get("dataset_fingerprint", ""),
        "comparison": comparison,
        "original_counts": ORIGINAL_COUNTS,
    }


# ----------------------------------------------------------------------------- jinja


def environment(templates_dir: Path):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _template_location(exc: BaseException, templates_dir: Path) -> str:
    """'file:line' of the innermost template frame in the traceback of `exc`."""
    location = ""
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name.endswith(".j2") or name.endswith(".html"):
            location = f"{_display(Path(name), templates_dir)}:{lineno}"
    return location or str(templates_dir / MAIN_TEMPLATE)


def _display(path: Path, templates_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(templates_dir.resolve().parent))
    except ValueError:
        return str(path)


def render_html(context: dict[str, Any], templates_dir: Path) -> str:
    import jinja2

    if not (templates_dir / MAIN_TEMPLATE).is_file():
        raise TemplateProblem(f"{templates_dir / MAIN_TEMPLATE}: template not found")
    env = environment(templates_dir)
    try:
        return env.get_template(MAIN_TEMPLATE).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = _display(Path(exc.filename), templates_dir) if exc.filename else exc.name
        raise TemplateProblem(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateProblem(f"{_template_location(exc, templates_dir)}: template not found: {exc.name}") from None
    except jinja2.TemplateError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemplateProblem(f"{_template_location(exc, templates_dir)}: template error: {message}") from None


def check_images(html: str, report_dir: Path, templates_dir: Path) -> None:
    """Every <img> of the report must exist under the report folder.

    A missing one is named with the template line that mentions it, when one does
    literally; figures without data never get here (they render as a note instead).
    """
    for src in dict.fromkeys(re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', html)):
        parsed = urllib.parse.urlsplit(src)
        if parsed.scheme or (report_dir / urllib.parse.unquote(parsed.path)).is_file():
            continue
        raise TemplateProblem(f"{_mention(src, templates_dir)}: figure {src} not found in {report_dir}")


def _mention(text: str, templates_dir: Path) -> str:
    """'file:line' of the first template line containing `text`, else the main template."""
    for path in sorted(templates_dir.rglob("*.j2")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if text in line:
                return f"{_display(path, templates_dir)}:{lineno}"
    return _display(templates_dir / MAIN_TEMPLATE, templates_dir)


# ----------------------------------------------------------------------------- PDF


def _url_fetcher_class():
    from weasyprint.urls import URLFetcher

    class SafeFetcher(URLFetcher):
        """Serves files under the allowed folders only: no network, no `..`, no other paths."""

        def __init__(self, roots: list[Path]) -> None:
            super().__init__(allowed_protocols=("file", "data"))
            self.roots = [r.resolve() for r in roots]

        def check(self, url: str) -> None:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme == "data":
                return
            if parsed.scheme != "file":
                raise MonkeyReportError(f"refused to fetch {url}: only local report files are allowed")
            raw = urllib.parse.unquote(parsed.path)
            if ".." in raw.replace("\\", "/").split("/"):
                raise MonkeyReportError(f"refused to fetch {url}: '..' in path")
            if parsed.netloc not in ("", "localhost"):
                raise MonkeyReportError(f"refused to fetch {url}: remote file host")
            path = Path(urllib.request.url2pathname(parsed.path)).resolve()
            if not any(path == root or root in path.parents for root in self.roots):
                raise MonkeyReportError(f"refused to fetch {url}: outside the report and templates folders")

        def fetch(self, url, headers=None):
            self.check(url)
            return super().fetch(url, headers)

    return SafeFetcher


def url_fetcher(roots: list[Path]):
    """A WeasyPrint URL fetcher confined to `roots` (its `check(url)` raises on refusal)."""
    return _url_fetcher_class()(roots)


def write_pdf(html: str, report_dir: Path, templates_dir: Path, path: Path) -> None:
    import logging

    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    fetcher = url_fetcher([report_dir, templates_dir])
    document = HTML(string=html, base_url=report_dir.resolve().as_uri() + "/", url_fetcher=fetcher)
    with results.atomic_path(path) as tmp:
        document.write_pdf(tmp)


# ----------------------------------------------------------------------------- entry point


def _inputs_digest(config: Config, templates_dir: Path, fmt: str) -> str:
    """Everything the rendered report depends on, for skipping an unchanged render."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(fmt.encode())
    h.update(repr(dataclasses.asdict(config)).encode())
    if config.source and Path(config.source).is_file():
        h.update(Path(config.source).read_bytes())
    files = sorted(p for p in templates_dir.rglob("*") if p.is_file())
    files.append(config.report_dir / "eda" / "eda.json")
    files += sorted((config.report_dir / "models").glob("*.json"))
    for exp in config.experiments:
        run_dir = config.runs_dir / exp.name
        files += [run_dir / "metrics.json", run_dir / "failed.json", run_dir / "history.csv"]
    for p in files:
        h.update(str(p).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def render(config: Config, fmt: str = "both", strict: bool = False, templates_dir: Path | None = None,
           force: bool = True) -> RenderOutcome:
    """Render report.html and/or report.pdf into the report folder.

    With `force=False` (as `build` calls it) nothing is redone when no input changed.
    """
    import time

    start = time.perf_counter()
    if fmt not in FORMATS:
        raise MonkeyReportError(f"--format: must be one of {', '.join(FORMATS)}, got '{fmt}'")
    templates_dir = Path(templates_dir) if templates_dir else REPO_TEMPLATES
    if not templates_dir.is_dir():
        raise MonkeyReportError(f"{templates_dir}: templates folder not found")
    report_dir = config.report_dir
    outputs = ([report_dir / "report.html"] if fmt in ("html", "both") else []) + \
              ([report_dir / "report.pdf"] if fmt in ("pdf", "both") else [])
    digest = _inputs_digest(config, templates_dir, fmt)
    marker = report_dir / ".render.sha"
    rows = _experiment_rows(config)
    pending = [r["name"] for r in rows if r["status"] == "pending"]
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if strict and (pending or failed):
        missing = [f"{n} (pending)" for n in pending] + [f"{n} (failed)" for n in failed]
        raise MonkeyReportError(f"--strict: missing results for {', '.join(missing)} in {config.runs_dir}")
    if (not force and marker.is_file() and marker.read_text().strip() == digest
            and all(p.is_file() for p in outputs)):
        return RenderOutcome(outputs, True, time.perf_counter() - start, pending, failed)

    context = build_context(config, rows)
    html = render_html(context, templates_dir)
    check_images(html, report_dir, templates_dir)
    css = templates_dir / STYLESHEET
    if css.is_file():
        results.write_text(report_dir / STYLESHEET, css.read_text(encoding="utf-8"))
    if fmt in ("pdf", "both"):
        write_pdf(html, report_dir, templates_dir, report_dir / "report.pdf")
    if fmt in ("html", "both"):
        results.write_text(report_dir / "report.html", html)
    results.write_text(marker, digest + "\n")
    return RenderOutcome(outputs, False, time.perf_counter() - start, pending, failed)
