"""render: the Spanish report from result files (no training, no torch)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from conftest import REPO, make_dataset
from monkeyreport.cli import app
from monkeyreport.errors import MonkeyReportError
from monkeyreport.results import SUMMARY_SCHEMA
from monkeyreport.spanish_format import decimal

SMOKE = REPO / "configs" / "smoke.toml"
SPEC_HEADINGS = [
    "Introducción", "Redes convolucionales", "AlexNet", "ResNet", "EfficientNet",
    "Aprendizaje por transferencia", "Los datos", "Análisis exploratorio", "Modelamiento",
    "Preprocesamiento", "Detalles de las arquitecturas", "Evaluación", "Resultados de los modelos",
    "Conclusiones", "Referencias", "Reproducibilidad", "Comparación con el informe original",
]
ROW = re.compile(r"(\S+) (Sí|No|-) (\d,\d{4}|pendiente|falló)(?: \[[^\]]*\])? (\d,\d{4}|pendiente|falló)")
runner = CliRunner()


def pdf_text(path: Path) -> str:
    text = " ".join(page.extract_text() or "" for page in PdfReader(path).pages)
    return re.sub(r"\s+", " ", text)


def table1_rows(text: str) -> list[tuple[str, ...]]:
    start = text.index("Tabla 1.")
    ends = [text.find(marker, start) for marker in ("Tabla 2.", "Figura ")]
    end = min(e for e in ends + [len(text)] if e >= 0)
    return ROW.findall(text[start:end])


def expected_rows(config_path: Path, runs_dir: Path) -> list[tuple[str, ...]]:
    from monkeyreport.config import load_config

    rows = []
    for exp in load_config(config_path).experiments:
        metrics = runs_dir / exp.name / "metrics.json"
        frozen = "-" if exp.architecture == "vanilla_cnn" else ("Sí" if exp.frozen else "No")
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            rows.append((exp.label, frozen, decimal(m["accuracy"]), decimal(m["macro_f1"])))
        else:
            rows.append((exp.label, frozen, "pendiente", "pendiente"))
    return rows


def write_config(tmp: Path, report_dir: Path, runs_dir: Path) -> Path:
    """smoke.toml with its output folders moved into `tmp`."""
    text = SMOKE.read_text()
    text = re.sub(r'report_dir = ".*"', f'report_dir = "{report_dir}"', text)
    text = re.sub(r'runs_dir = ".*"', f'runs_dir = "{runs_dir}"', text)
    path = tmp / "smoke.toml"
    path.write_text(text)
    return path


def fake_predictions(data_root: Path, wrong: int) -> tuple[str, list[list[int]], float, float]:
    """predictions.csv text for the tiny dataset's validation images, the first `wrong` of
    them misclassified, with the confusion matrix, accuracy and macro F1 it implies."""
    import numpy as np

    from monkeyreport.stats import accuracy, confusion_matrices, macro_f1

    files = sorted(p.relative_to(data_root).as_posix() for p in (data_root / "validation").rglob("*.jpg"))
    true = np.array([int(Path(f).parent.name[1:]) for f in files])
    pred = np.where(np.arange(len(files)) < wrong, (true + 1) % 3, true)
    lines = ["file,true_class,predicted_class,prob_n0,prob_n1,prob_n2"]
    for f, t, p in zip(files, true, pred):
        probs = ["0.1"] * 3
        probs[p] = "0.8"
        lines.append(f"{f},n{t},n{p}," + ",".join(probs))
    cm = confusion_matrices(true, pred, 3)
    return "\n".join(lines) + "\n", cm.tolist(), float(accuracy(cm)), float(macro_f1(cm))


def fake_results(config_path: Path, data_root: Path) -> None:
    """eda.json from a tiny dataset, plus made-up predictions, metrics, history and model summaries."""
    from monkeyreport.config import load_config
    from monkeyreport.eda import run_eda

    cfg = load_config(config_path).with_overrides(data_dir=data_root)
    run_eda(cfg, show_progress=False)
    for i, exp in enumerate(cfg.experiments):
        run_dir = cfg.runs_dir / exp.name
        run_dir.mkdir(parents=True, exist_ok=True)
        predictions, cm, acc, f1 = fake_predictions(data_root, wrong=max(0, 6 - i))
        (run_dir / "predictions.csv").write_text(predictions)
        metrics = {
            "experiment": exp.name, "title": exp.label, "architecture": exp.architecture,
            "architecture_title": exp.label, "frozen": exp.frozen, "pretrained": exp.pretrained,
            "weights": "random", "accuracy": acc, "macro_f1": f1, "confusion_matrix": cm,
            "classes": ["n0", "n1", "n2"], "n_train": 12, "n_val": 6,
            "params_total": 1_000_000 * (i + 1), "params_trainable": 10_000 * (i + 1), "epochs": 2,
            "train_seconds": 1.5, "device": "cpu", "seed": 42,
            "head": {"in_features": 512, "hidden": 256, "dropout": 0.4 if i == 1 else 0.0, "outputs": 3},
            "preprocessing": {"resize": 72, "crop": 64, "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225]} if i < 5 else
                             {"resize": 72, "crop": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            "versions": {"python": "3.11", "torch": "x", "torchvision": "x", "timm": "x",
                         "lightning": "x", "torchmetrics": "x"},
        }
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "history.csv").write_text(
            "epoch,train_loss,val_loss,val_accuracy,val_macro_f1\n1,2.0,2.1,0.2,0.1\n2,1.5,1.8,0.3,0.2\n")
    families = {"vanilla_cnn": ("VanillaCNN", "baseline", "own"),
                "alexnet": ("AlexNet", "alexnet", "torchvision"), "resnet34": ("ResNet34", "resnet", "timm"),
                "efficientnet_b0": ("EfficientNetB0", "efficientnet", "timm")}
    for arch, (title, family, library) in families.items():
        stages = [{"group": "backbone", "name": "0", "layer": "Conv2d + ReLU", "output_shape": [8, 32, 32],
                   "params": 100},
                  {"group": "head", "name": "head.0", "layer": "Linear", "output_shape": [10], "params": 90}]
        path = cfg.report_dir / "models" / f"{arch}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        efficiency = {"input_shape": [3, 64, 64], "flops": 2_000_000, "flops_backbone": 1_900_000, "flops_head": 100_000,
                      "latency": [{"batch": 1, "ms_per_image": 2.5, "repeats": 10},
                                  {"batch": 32, "ms_per_image": 1.5, "repeats": 3}],
                      "cpu": "Test CPU", "threads": 2, "torch": "x"}
        path.write_text(json.dumps({"schema": SUMMARY_SCHEMA, "architecture": arch, "title": title,
                                    "family": family, "library": library,
                                    "input_shape": [3, 224, 224], "params_total": 190, "stages": stages,
                                    "params_backbone": 100, "params_head": 90, "params_trainable_frozen": 90,
                                    "params_trainable_finetuned": 190, "efficiency": efficiency}))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("render")
    data_root = make_dataset(tmp / "data")
    config = write_config(tmp, tmp / "report", tmp / "runs")
    fake_results(config, data_root)
    result = runner.invoke(app, ["render", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "config": config, "report": tmp / "report", "runs": tmp / "runs"}


def copy_project(project: dict[str, Path], dest: Path) -> dict[str, Path]:
    shutil.copytree(project["report"], dest / "report")
    shutil.copytree(project["runs"], dest / "runs")
    config = write_config(dest, dest / "report", dest / "runs")
    return {"tmp": dest, "config": config, "report": dest / "report", "runs": dest / "runs"}


def test_pdf_has_every_heading_table_and_caption(project):
    text = pdf_text(project["report"] / "report.pdf")
    for heading in SPEC_HEADINGS:
        assert heading in text, heading
    assert table1_rows(text) == expected_rows(project["config"], project["runs"])
    for n in range(1, 12):
        assert f"Figura {n}." in text, n
    assert "Tabla 1." in text
    assert "pesos aleatorios" in text  # smoke profile: stated on the title page
    assert "0,9412" in text  # the original report's published numbers in the appendix


def test_best_row_bold_and_html_stands_alone(project):
    html = (project["report"] / "report.html").read_text()
    best = re.search(r'<tr class="best[^"]*">(.*?)</tr>', html, re.S).group(1)
    assert "<strong>EfficientNetB0</strong>" in best  # highest made-up accuracy: the last row
    assert (project["report"] / "report.css").is_file()
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert not src.startswith(("/", "http")) and (project["report"] / src).is_file(), src


def test_pending_and_failed_experiments(project, tmp_path):
    p = copy_project(project, tmp_path)
    (p["runs"] / "alexnet_frozen" / "metrics.json").unlink()
    (p["runs"] / "resnet34_finetuned" / "metrics.json").unlink()
    (p["runs"] / "resnet34_finetuned" / "failed.json").write_text(
        json.dumps({"experiment": "resnet34_finetuned", "reason": "out of memory"}))
    result = runner.invoke(app, ["render", "--config", str(p["config"]), "--format", "html"])
    assert result.exit_code == 0, result.output
    html = (p["report"] / "report.html").read_text()
    assert re.search(r"<td>AlexNet</td><td>Sí</td><td class=\"num\">pendiente</td>", html)
    assert re.search(r"<td>ResNet34</td><td>No</td><td class=\"num\">falló</td>", html)
    assert "out of memory" in html
    strict = runner.invoke(app, ["render", "--config", str(p["config"]), "--strict"])
    assert strict.exit_code == 1
    assert "alexnet_frozen (pending)" in strict.output and "resnet34_finetuned (failed)" in strict.output


def copied_templates(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    return templates


def render_with(config: Path, templates: Path):
    return runner.invoke(app, ["render", "--config", str(config), "--templates", str(templates)])


def test_template_errors_are_one_line_and_keep_the_old_report(project, tmp_path):
    p = copy_project(project, tmp_path)
    before = (p["report"] / "report.pdf").read_bytes()
    section = copied_templates(tmp_path) / "sections" / "07_conclusiones.html.j2"
    lines = section.read_text().splitlines()
    index = lines.index("{% for f in findings %}")
    where = f"sections/07_conclusiones.html.j2:{index + 1}"
    lines[index] = "{% endif %}"  # a stray tag
    section.write_text("\n".join(lines) + "\n")
    result = render_with(p["config"], tmp_path / "templates")
    assert result.exit_code == 1
    # Result lines of the stages before render may come first (stdout); the error is one line.
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, result.output
    assert message.startswith("error: ") and where in message, message
    assert result.output.strip().splitlines()[-1] == message
    assert (p["report"] / "report.pdf").read_bytes() == before

    lines[index] = "{% for f in findings %}{{ no_such_value }}"
    section.write_text("\n".join(lines) + "\n")
    result = render_with(p["config"], tmp_path / "templates")
    assert result.exit_code == 1
    assert where in result.output and "no_such_value" in result.output
    assert (p["report"] / "report.pdf").read_bytes() == before


def test_url_fetcher_refuses_network_and_escapes(tmp_path):
    from monkeyreport.render import url_fetcher

    root = tmp_path / "report"
    (root / "figures").mkdir(parents=True)
    (root / "figures" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    fetcher = url_fetcher([root])
    fetcher.check((root / "figures" / "a.png").as_uri())  # allowed
    for url in ("http://example.com/a.png", "https://example.com/x.css",
                (tmp_path / "secret.txt").as_uri(),
                root.as_uri() + "/figures/../../secret.txt",
                "file:///etc/passwd", "ftp://example.com/x"):
        with pytest.raises(MonkeyReportError):
            fetcher.check(url)


def test_render_does_not_import_torch(project, tmp_path):
    """`render` as the CLI runs it: statistics and figures computed again, then the report."""
    p = copy_project(project, tmp_path)
    (p["report"] / "stats" / "stats.json").unlink()
    (p["report"] / "figures" / "figures.json").unlink()
    (p["report"] / "report.html").unlink()
    code = ("import sys; from pathlib import Path; from monkeyreport import pipeline; "
            "from monkeyreport.config import load_config; "
            f"outcome = pipeline.render_report(load_config(Path({str(p['config'])!r})), "
            f"pipeline.Options(fmt='html', templates_dir=Path({str(REPO / 'templates')!r}), echo=print)); "
            "assert outcome.ran == ['stats', 'figures', 'render'], outcome.lines; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (p["report"] / "report.html").is_file() and (p["report"] / "stats" / "stats.json").is_file()


def finding_row(name, arch, frozen, acc, params=1):
    from monkeyreport.results import PreprocessingRecord, RunMetrics

    run = RunMetrics(name, arch, arch, arch, frozen, "imagenet", "ImageNet", acc, acc, [], [], 1, 1,
                     params, params, 1, 1.0, "cpu", 0, PreprocessingRecord(1, 1, (0.5,), (0.5,)), {})
    return {"name": name, "label": arch, "architecture": arch, "frozen": frozen, "status": "ok",
            "transfer": arch != "vanilla_cnn", "accuracy": acc, "macro_f1": acc,
            "best": False, "run": run, "stats": None, "group": None, "recipe": {}, "reason": "", "history": [], "on_features": False}


def mcnemar_test(a, b, p):
    """A one-seed comparison as stats.json gives it, `p` already corrected by Holm."""
    return {"a": a, "b": b, "only_a_right": 9, "only_b_right": 1, "test": "mcnemar", "seeds": [42],
            "p_value": p, "p_holm": p, "significant": p < 0.05}


def word(finding_list, num_classes=10) -> str:
    """The conclusions as the report's templates word them."""
    from monkeyreport.render import environment

    env = environment(REPO / "templates")
    macro = env.get_template("macros.html.j2").module.finding
    return " ".join(re.sub(r"\s+", " ", str(macro(f, num_classes))) for f in finding_list)


def test_conclusions_follow_the_numbers_and_their_significance():
    from monkeyreport.findings import findings

    rows = [finding_row("v", "vanilla_cnn", False, 0.46), finding_row("af", "AlexNet", True, 0.94),
            finding_row("at", "AlexNet", False, 0.11)]
    rows[1]["best"] = True
    tests = [mcnemar_test("af", "v", 0.001), mcnemar_test("af", "at", 0.0001)]
    found = findings(rows, tests, 10, 0)
    kinds = [f["kind"] for f in found]
    assert kinds == ["winner", "freezing", "baseline", "failed_to_learn"]
    assert [r["name"] for r in found[0]["worse"]] == ["v", "at"] and not found[0]["tied"]
    assert found[1]["winner"] == "frozen"
    assert found[2]["n_above"] == 1 and found[2]["gap_min"] == pytest.approx(-0.35)
    text = word(found)
    assert "El mejor resultado en validación lo obtuvo AlexNet (congelado)" in text
    assert "Según la prueba exacta de McNemar, con la corrección de Holm" in text
    assert ("estadísticamente significativa (p corregido &lt; 0,05) frente a vanilla_cnn y "
            "AlexNet (ajuste fino)") in text
    assert "el modelo con la red troncal congelada obtuvo un resultado significativamente mejor" in text
    assert "AlexNet (ajuste fino) no aprendió" in text
    assert "Uno de los dos modelos con aprendizaje por transferencia la superó" in text
    assert "de −35,0 a +48,0 puntos" in text

    # Not significant: no model is called better, and the text says so.
    tied = [mcnemar_test("af", "v", 0.2), mcnemar_test("af", "at", 0.06)]
    found = findings(rows, tied, 10, 0)
    assert not found[0]["worse"] and [t["row"]["name"] for t in found[0]["tied"]] == ["v", "at"]
    assert found[1]["winner"] is None
    text = word(found)
    assert "la diferencia no es estadísticamente significativa" in text
    assert "no puede afirmarse que sea mejor que esos modelos" in text
    assert "significativamente mejor" not in text and "superó de forma significativa" not in text


def groups_of(runs):
    """One-seed groups of stats.json for these runs (each run its own experiment)."""
    return {name: {"runs": [name], "accuracy": {"mean": r.accuracy}, "macro_f1": {"mean": r.macro_f1}}
            for name, r in runs.items()}


def test_parameter_trend_needs_three_architectures():
    from dataclasses import replace

    from monkeyreport.findings import findings
    from monkeyreport.stats import parameter_trend

    two_archs = [finding_row("v", "vanilla_cnn", False, 0.55, 1_400_000),
                 finding_row("lf", "lite0", True, 0.97, 4_000_000),
                 finding_row("lt", "lite0", False, 0.94, 4_000_000)]
    two_archs[1]["best"] = True
    runs = {r["name"]: replace(r["run"], architecture=r["architecture"]) for r in two_archs}
    assert parameter_trend(groups_of(runs), runs) is None
    assert "parameters" not in [f["kind"] for f in findings(two_archs, [], 10, 0, trend=None)]
    three = two_archs + [finding_row("r", "resnet34", True, 0.96, 21_000_000)]
    runs = {r["name"]: replace(r["run"], architecture=r["architecture"]) for r in three}
    trend = parameter_trend(groups_of(runs), runs)
    assert trend["experiments"] == ["v", "lf", "r"] and trend["rho"] == pytest.approx(0.5)
    (found,) = [f for f in findings(three, [], 10, 0, trend=trend) if f["kind"] == "parameters"]
    assert found["largest"]["name"] == "r" and found["n"] == 3
    text = word([found])
    assert "Spearman 0,50" in text and "no permite atribuir" in text and "21,00 M" in text


def test_missing_figure_names_the_template_line_and_keeps_the_report(project, tmp_path):
    p = copy_project(project, tmp_path)
    before = (p["report"] / "report.html").read_text()
    section = copied_templates(tmp_path) / "sections" / "04_datos.html.j2"
    lines = section.read_text().splitlines()
    lines.insert(2, '<img src="figures/mapa_de_especies.png">')
    section.write_text("\n".join(lines) + "\n")
    result = render_with(p["config"], tmp_path / "templates")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: templates/sections/04_datos.html.j2:3: figure "
                                    "figures/mapa_de_especies.png not found"), result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.output
    assert (p["report"] / "report.html").read_text() == before


# Spanish function words and letters: any of them in the output came from somewhere else
# than the minimal English templates.
SPANISH = re.compile(r"[áéíóúñ¿¡]|\b(de|del|la|las|el|los|con|sin|para|por|una|que|y|en|se)\b", re.I)


def test_every_word_of_the_report_comes_from_the_templates(project, tmp_path):
    p = copy_project(project, tmp_path)
    result = render_with(p["config"], REPO / "tests" / "minimal_templates")
    assert result.exit_code == 0, result.output
    html = (p["report"] / "report.html").read_text()
    assert "Monkeys, built" in html and "efficientnet_b0_finetuned" in html and "winner" in html
    text = re.sub(r"<[^>]+>", " ", html)
    spanish = sorted({m.group(0) for m in SPANISH.finditer(text)})
    assert not spanish, [text[max(0, m.start() - 40):m.end() + 40] for m in SPANISH.finditer(text)][:5]


def test_overfitting_is_found_where_validation_loss_rises_after_its_minimum():
    from monkeyreport.findings import findings

    rows = [finding_row("v", "vanilla_cnn", False, 0.5), finding_row("e", "lite0", False, 0.9)]
    rows[1]["best"] = True
    rows[0]["history"] = [{"epoch": e, "val_loss": v, "val_accuracy": 0.5}
                          for e, v in enumerate([2.0, 1.5, 1.4, 1.3], 1)]
    rows[1]["history"] = [{"epoch": e, "val_loss": v, "val_accuracy": 0.9}
                          for e, v in enumerate([1.0, 0.8, 0.9, 1.1], 1)]
    (found,) = [f for f in findings(rows, [], 10, 0) if f["kind"] == "overfitting"]
    assert [(o["row"]["name"], o["curves"]["best"]["epoch"], o["curves"]["last"]["epoch"]) for o in found["runs"]] \
        == [("e", 2, 4)]
    assert "mínimo en la época 2 (0,800) y subió a 1,100 en la época 4" in word([found])


def section_text(html: str, heading: str) -> str:
    """The text of the <section> whose <h2> is `heading`."""
    match = re.search(rf"<section[^>]*>\s*<h2>{heading}</h2>(.*?)</section>", html, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))


def test_text_names_exactly_the_architectures_of_the_run(project, tmp_path):
    p = copy_project(project, tmp_path)
    text = p["config"].read_text()
    blocks = text.split("[[experiments]]")
    kept = [b for b in blocks[1:] if 'architecture = "vanilla_cnn"' in b or 'architecture = "alexnet"' in b]
    p["config"].write_text(blocks[0] + "".join("[[experiments]]" + b for b in kept))
    result = runner.invoke(app, ["render", "--config", str(p["config"]), "--format", "html"])
    assert result.exit_code == 0, result.output
    html = (p["report"] / "report.html").read_text()
    intro = section_text(html, "Introducción")
    assert "Se comparan VanillaCNN y AlexNet" in intro and "torchvision" in intro
    assert "ResNet" not in intro and "EfficientNet" not in intro and "timm" not in intro
    cnn = section_text(html, "Redes convolucionales")
    assert "no se entrenó ninguna ResNet" in cnn and "no se entrenó ninguna EfficientNet" in cnn
    assert "Este trabajo usa la variante de torchvision" in cnn
    assert "arch_alexnet.png" in html and "arch_vanilla_cnn.png" in html and "arch_resnet34.png" not in html
    modelling = section_text(html, "Modelamiento")  # one transfer architecture: no plural of it
    assert "AlexNet" in modelling and "variantes cada una" not in modelling and "redes troncales" not in modelling


# Each concept has one Spanish term; the English one appears once, in parentheses, where the
# term is first explained (Resumen or Introducción), and never again in the prose.
ENGLISH_TERMS = ("accuracy", "fine-tuning", "backbone", "transfer learning")
CALQUES = ("esta ejecución",)


def prose(html: str) -> str:
    """The report's running text: the body without tags, code, the references (titles as
    published) and the first parenthesised gloss of each English term."""
    body = html[html.index("<body"):]
    body = re.sub(r'<section class="references">.*?</section>', " ", body, flags=re.S)
    body = re.sub(r"<code>.*?</code>", " ", body, flags=re.S)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    for term in ENGLISH_TERMS:
        text = re.sub(rf"\(\s*{re.escape(term)}\s*\)", " ", text, count=1, flags=re.I)
    return text


def test_one_spanish_term_per_concept_after_its_first_gloss(project):
    text = prose((project["report"] / "report.html").read_text())
    assert "exactitud" in text and "ajuste fino" in text and "red troncal" in text  # the terms are used
    found = [text[max(0, m.start() - 60):m.end() + 60]
             for m in re.finditer("|".join(re.escape(w) for w in ENGLISH_TERMS + CALQUES), text, re.I)]
    assert not found, found[:8]


def test_every_figure_and_table_is_cited_in_the_text(project):
    html = (project["report"] / "report.html").read_text()
    body = re.sub(r"<figcaption>.*?</figcaption>|<caption>.*?</caption>", " ", html, flags=re.S)
    body = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    cited = {(kind, int(n)) for kind, numbers in re.findall(r"\b(Figura|Tabla)s? ((?:\d+(?:, | y )?)+)", body)
             for n in re.findall(r"\d+", numbers)}
    shown = {(kind, int(n)) for kind, n in re.findall(r'<span class="label">(Figura|Tabla) (\d+)\.</span>', html)}
    assert ("Figura", 12) in shown and ("Tabla", 5) in shown and "Cuadro" not in html
    assert shown - cited == set()
    for kind in ("Figura", "Tabla"):  # one numbering series each, in the order they appear
        numbers = re.findall(rf'<span class="label">{kind} (\d+)\.</span>', html)
        assert [int(n) for n in numbers] == list(range(1, len(numbers) + 1))


def test_every_reference_is_cited_in_the_text(project):
    html = (project["report"] / "report.html").read_text()
    listed = re.search(r'<section class="references">.*?</section>', html, re.S).group(0)
    n = len(re.findall(r"<li>", listed))
    body = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.replace(listed, "")))
    cited = {int(k) for group in re.findall(r"\[(\d+(?:[,–-] ?\d+)*)\]", body) for k in re.findall(r"\d+", group)}
    assert n >= 12 and set(range(1, n + 1)) <= cited, sorted(set(range(1, n + 1)) - cited)
