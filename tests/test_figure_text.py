"""Figures readable at print size: no text under 7 pt as the PDF prints it, species named as in
the species table, and every word drawn from the templates' figures.toml.

What is measured is what matplotlib draws (every call of the Agg renderer's draw_text while a
figure is saved) and the size of the file it saves; the size at which the page prints that
file comes from report.css, and a rendered PDF confirms that the page prints it so.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import RendererAgg
from PIL import Image
from pypdf import PdfReader

from conftest import REPO, make_dataset, noise_image
from test_render import SPANISH, fake_results, runner, write_config

from monkeyreport import figures, pipeline, report_figures
from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.eda import run_eda
from monkeyreport.errors import MonkeyReportError
from monkeyreport.figure_words import figure_words
from monkeyreport.results import ModelStage
from monkeyreport.species import species_table

TEMPLATES = REPO / "templates"
MINIMAL = REPO / "tests" / "minimal_templates"
CM = 1 / 2.54  # inches
MIN_PT = 7.0
LATIN = ["Alouatta palliata", "Erythrocebus patas", "Cacajao calvus", "Macaca fuscata", "Cebuella pygmaea",
         "Cebus capucinus", "Mico argentatus", "Saimiri sciureus", "Aotus nigriceps", "Trachypithecus johnii"]


# ----------------------------------------------------------------------------- measuring


def print_box() -> tuple[float, float, float]:
    """From report.css: the resolution at which a figure's image prints (dots per inch), and
    the widest and tallest it may print (inches): the A4 text block and the image's max-height."""
    css = (TEMPLATES / "report.css").read_text()
    page = re.search(r"@page\s*{[^}]*?size:\s*A4;[^}]*?margin:\s*([\d.]+)cm\s+([\d.]+)cm\s+[\d.]+cm\s+([\d.]+)cm", css)
    assert page, "report.css: @page with size A4 and margins in cm"
    width = (21.0 - float(page.group(2)) - float(page.group(3))) * CM
    rule = re.search(r"figure img\s*{([^}]*)}", css).group(1)
    dpi = float(re.search(r"image-resolution:\s*([\d.]+)dpi", rule).group(1))
    height = float(re.search(r"max-height:\s*([\d.]+)cm", rule).group(1)) * CM
    return dpi, width, height


def printed_scale(path: Path) -> float:
    """How much the page shrinks a figure's image: report.css prints it at its resolution,
    within the text block's width and its maximum height."""
    dpi, max_width, max_height = print_box()
    w, h = Image.open(path).size
    return min(1.0, max_width / (w / dpi), max_height / (h / dpi))


@contextmanager
def recording(monkeypatch) -> Iterator[dict[Path, list[tuple[str, float]]]]:
    """Every text drawn into each saved figure, with its size in points as drawn."""
    drawn: dict[Path, list[tuple[str, float]]] = {}
    current: list[tuple[str, float]] = []
    draw_text, save = RendererAgg.draw_text, figures.save

    def record_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        current.append((s, prop.get_size_in_points()))
        return draw_text(self, gc, x, y, s, prop, angle, ismath, mtext)

    def record_save(fig, path):
        current.clear()
        save(fig, path)
        drawn[Path(path)] = list(current)

    monkeypatch.setattr(RendererAgg, "draw_text", record_text)
    monkeypatch.setattr(figures, "save", record_save)
    yield drawn


def too_small(drawn: dict[Path, list[tuple[str, float]]]) -> list[str]:
    """'file: text (size as printed)' for each text under 7 pt at print size."""
    small = []
    for path, texts in drawn.items():
        scale = printed_scale(path)
        small += [f"{path.name}: {s!r} ({size * scale:.2f} pt)" for s, size in texts if size * scale < MIN_PT - 1e-6]
    return small


def words_of(text: str) -> set[str]:
    """The words of a drawn text, mathtext commands and escapes left out."""
    return {w.lower() for w in re.findall(r"[^\W\d_]+", re.sub(r"\\[a-z]+", " ", text))}


def spanish_words() -> set[str]:
    """The words of the real figures.toml that the English one does not use."""
    def words(folder: Path) -> set[str]:
        table = tomllib.loads((folder / "figures.toml").read_text())
        return {w for section in table.values() for text in section.values()
                for w in words_of(re.sub(r"{\w+}", " ", text))}
    return words(TEMPLATES) - words(MINIMAL)


# ----------------------------------------------------------------------------- drawing


def draw_every_figure(templates: Path, out: Path) -> None:
    """Each drawing of figures.py at its most crowded: ten species with the longest names,
    seven experiments, three panels of one architecture, three Grad-CAM rows."""
    words = figure_words(templates)
    table = species_table(templates)
    names = [table.get(f"n{i}", {}).get("latin", latin) for i, latin in enumerate(LATIN)]
    codes = [f"n{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    photo = [noise_image(i, (120, 90)) for i in range(12)]
    experiments = words["experiments"]
    labels = ["VanillaCNN", *(experiments[variant].format(label=label) for label in ("AlexNet", "ResNet34")
                              for variant in ("frozen", "finetuned")),
              experiments["frozen"].format(label="EfficientNet-B0"),
              experiments["finetuned_shared"].format(label="EfficientNet-Lite0 (tuned recipe)")]

    figures.class_distribution({"training": {c: 150 - 3 * i for i, c in enumerate(codes)},
                                "validation": {c: 30 - i for i, c in enumerate(codes)}},
                               dict(zip(codes, names)), words, out / "class_distribution.png")
    figures.sample_grid([(n, photo[:4]) for n in names], out / "sample_grid.jpg")
    figures.image_sizes({"training": [(int(a), int(b)) for a, b in rng.integers(100, 1500, (200, 2))],
                         "validation": [(400, 300)] * 20}, words, out / "image_sizes.png")
    figures.cnn_schematic(words, 10, out / "cnn_schematic.png")
    figures.transfer_learning_scheme(words, 10, out / "transfer_learning.png")
    stages = [ModelStage("backbone", str(i), "4 × DepthwiseSeparableConv + BatchNormAct2d", [1280, 112, 112],
                         12_345_678) for i in range(11)] + [ModelStage("head", "head", "Linear + ReLU", [512], 655_872)]
    figures.architecture_diagram(SimpleNamespace(input_shape=[3, 224, 224], stages=stages), words,
                                 out / "arch.png")
    matrix = (rng.integers(0, 9, (10, 10)) + np.eye(10, dtype=int) * 120).tolist()
    figures.confusion_matrices([(labels[-1], matrix), (experiments["frozen_variant"], matrix),
                                (experiments["finetuned_variant"], matrix)],
                               names, words, out / "confusion_3.png")
    figures.confusion_matrices([(labels[0], matrix)], names, words, out / "confusion_1.png")
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_accuracy": 0.1 * e,
                "train_accuracy": 0.09 * e} for e in range(1, 11)]
    figures.training_curves([(label, history) for label in labels], words, out / "training_curves.png")
    figures.seed_values([(label, [(s, 0.9, 0.89) for s in (1, 2, 3)]) for label in labels], words,
                        out / "seeds.png")
    bins = [{"lower": i / 10, "upper": (i + 1) / 10, "count": 5, "accuracy": i / 10, "confidence": i / 10 + 0.05}
            for i in range(10)]
    figures.reliability_diagrams([(label, {"bins": bins, "ece": 0.041}) for label in labels], words,
                                 out / "reliability.png")
    figures.top_losses_gallery([(photo[i], names[-1], names[i % 10], 0.93, i % 5 == 0) for i in range(12)],
                               words, out / "top_losses.jpg")
    overlays = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(10)]
    facts = [(names[(i + 1) % 10], 0.87, i % 2 == 0, None if i == 3 else 0.41, 0.62) for i in range(10)]
    figures.grad_cam_grid(names, overlays, [(labels[5], overlays, [f[:4] + (None,) for f in facts]),
                                            (labels[6], overlays, facts),
                                            (experiments["frozen_variant"], overlays, facts)],
                          out / "gradcam.jpg", words=words)
    figures.leakage_pairs([(photo[i], photo[i + 1], names[-1], "n9t0123.jpg", "n9v0123.jpg") for i in range(4)],
                          words, out / "leakage_pairs.jpg")


def private(smoke: dict, tmp_path: Path):
    """The smoke project's config with the data and a copy of its report folder in `tmp_path`."""
    shutil.copytree(smoke["report"], tmp_path / "report")
    cfg = load_config(smoke["config"]).with_overrides(data_dir=smoke["data"])
    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, report_dir=str(tmp_path / "report")))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict[str, Path]:
    """The smoke profile rendered from made-up results on a tiny dataset (eda, figures and
    render stages as a build runs them); `texts` holds what its figures drew."""
    tmp = tmp_path_factory.mktemp("figure_text")
    config = write_config(tmp, tmp / "report", tmp / "runs")
    with pytest.MonkeyPatch.context() as monkeypatch, recording(monkeypatch) as drawn:
        fake_results(config, make_dataset(tmp / "data"))
        result = runner.invoke(app, ["render", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return {"config": config, "report": tmp / "report", "data": tmp / "data", "drawn": drawn}


# ----------------------------------------------------------------------------- tests


def test_no_figure_text_under_7_pt_at_print_size(monkeypatch, tmp_path):
    with recording(monkeypatch) as drawn:
        draw_every_figure(TEMPLATES, tmp_path)
    assert len(drawn) == 14 and all(texts for texts in drawn.values())
    assert not too_small(drawn), too_small(drawn)[:10]
    # Drawn to fit the page, they print at the size they were drawn.
    assert [p.name for p in drawn if printed_scale(p) < 0.999] == []


def test_the_smoke_report_prints_each_figure_at_its_drawn_size_and_no_text_under_7_pt(smoke):
    assert not too_small(smoke["drawn"]), too_small(smoke["drawn"])[:10]
    dpi, _, _ = print_box()
    assert dpi == figures.DPI
    placed = []  # (pixel size, printed width in inches) of every image of the PDF

    for page in PdfReader(smoke["report"] / "report.pdf").pages:
        xobjects = page["/Resources"].get("/XObject", {})

        def visit(op, args, cm, tm, xobjects=xobjects):
            if op == b"Do" and args and args[0] in xobjects and xobjects[args[0]].get("/Subtype") == "/Image":
                image = xobjects[args[0]]
                placed.append(((int(image["/Width"]), int(image["/Height"])), cm[0] / 72))

        page.extract_text(visitor_operand_before=visit)
    files = {Image.open(p).size: p for p in smoke["drawn"]}
    assert len(placed) >= 10
    for size, inches in placed:
        assert inches == pytest.approx(size[0] / dpi * printed_scale(files[size]), rel=0.01), files[size].name


def test_figures_name_species_as_the_species_table_does(smoke, monkeypatch, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    species = templates / "species.toml"
    species.write_text(species.read_text().replace('latin = "Alouatta palliata"', 'latin = "Alouatta testii"'))
    cfg = private(smoke, tmp_path)
    with recording(monkeypatch) as drawn:
        run_eda(cfg, show_progress=False, templates_dir=templates)
        report_figures.draw(cfg, templates)
    texts = {p.name: " ".join(s for s, _ in t) for p, t in drawn.items()}
    for name in ("class_distribution.png", "sample_grid.jpg", "confusion_alexnet.png"):
        assert "Alouatta\\ testii" in texts[name] or "Alouatta testii" in texts[name], name
        assert "palliata" not in texts[name], name


def test_minimal_templates_draw_no_spanish_word(smoke, monkeypatch, tmp_path):
    spanish = spanish_words()
    assert {"entrenamiento", "validación", "época", "pérdida"} <= spanish
    cfg = private(smoke, tmp_path)
    with recording(monkeypatch) as drawn:
        run_eda(cfg, show_progress=False, templates_dir=MINIMAL)
        report_figures.draw(cfg, MINIMAL)
        draw_every_figure(MINIMAL, tmp_path)
    assert len(drawn) > 20
    found = sorted({f"{p.name}: {s!r}" for p, texts in drawn.items() for s, _ in texts
                    if words_of(s) & spanish or SPANISH.search(s)})
    assert not found, found[:10]


def test_editing_figure_words_redraws_the_figures(smoke, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    cfg = load_config(smoke["config"])

    def digests() -> dict[str, dict[str, str]]:
        inputs = pipeline.Inputs(cfg, pipeline.Options(templates_dir=templates))
        return {s.name: inputs.of(s) for s in pipeline.STAGES if s.name != "render"}

    before = digests()
    words = templates / "figures.toml"
    words.write_text(words.read_text().replace('epoch = "Época"', 'epoch = "Épocas"'))
    after = digests()
    assert {name for name in before if before[name] != after[name]} == {"eda", "interpret", "figures"}


def test_figure_words_are_checked(tmp_path):
    words = tmp_path / "figures.toml"
    text = (TEMPLATES / "figures.toml").read_text()
    assert figure_words(TEMPLATES)["curves"]["epoch"] == "Época"
    cases = {
        "not found": None,
        "'epoch'": text.replace('epoch = "Época"\n', ""),
        "{count}": text.replace('"{split} ({n} imágenes)"', '"{split} ({count} imágenes)"'),
        "unknown key 'epochs'": text.replace('epoch = "Época"', 'epoch = "Época"\nepochs = "Épocas"'),
        "not valid TOML": text + "\n[",
    }
    for message, content in cases.items():
        if content is None:
            words.unlink(missing_ok=True)
        else:
            words.write_text(content)
        with pytest.raises(MonkeyReportError, match=re.escape(message)) as error:
            figure_words(tmp_path)
        assert str(words) in str(error.value) and "\n" not in str(error.value)


def test_training_curves_name_the_holdout_when_the_epoch_is_chosen_on_it(monkeypatch, tmp_path):
    words = figure_words(TEMPLATES)
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5, "val_accuracy": 0.4}
            for e in (1, 2)]
    with recording(monkeypatch) as drawn:
        figures.training_curves([("VanillaCNN", rows)], words, tmp_path / "last.png")
        figures.training_curves([("VanillaCNN", rows)], words, tmp_path / "holdout.png", holdout=True)
    last, holdout = ({text for text, _ in drawn[tmp_path / name]} for name in ("last.png", "holdout.png"))
    curves = words["curves"]
    assert {curves["val_loss"], curves["val_accuracy"]} <= last
    assert not {curves["holdout_loss"], curves["holdout_accuracy"]} & last
    assert {curves["holdout_loss"], curves["holdout_accuracy"]} <= holdout
    assert not {curves["val_loss"], curves["val_accuracy"]} & holdout
