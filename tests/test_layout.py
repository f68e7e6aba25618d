"""Page layout of the PDF: no page left more than a third empty unless a chapter follows,
figures floated past text, tables and lists split without a lone row, unbroken cells,
and the config appendix as the settings that differ from the defaults."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, make_dataset
from pypdf import PdfReader
from test_render import fake_results, runner, write_config

from monkeyreport import render
from monkeyreport.cli import app
from monkeyreport.config import load_config
from monkeyreport.context import config_changes, config_hash

TEMPLATES = REPO / "templates"
CM = 72 / 2.54  # PDF points per centimetre


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    """The smoke profile's report built from made-up results on a tiny dataset."""
    tmp = tmp_path_factory.mktemp("layout")
    config = write_config(tmp, tmp / "report", tmp / "runs")
    fake_results(config, make_dataset(tmp / "data"))
    result = runner.invoke(app, ["render", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return {"config": config, "report": tmp / "report", "runs": tmp / "runs"}


def page_margins() -> tuple[float, float]:
    """The top and bottom page margins of report.css, in points."""
    found = re.search(r"@page\s*{[^}]*?margin:\s*([\d.]+)cm\s+[\d.]+cm\s+([\d.]+)cm", (TEMPLATES / "report.css").read_text())
    return float(found.group(1)) * CM, float(found.group(2)) * CM


def empty_fractions(pdf: Path) -> list[float]:
    """For each page, the fraction of its content area below its lowest line of text (every
    figure of the report has its caption under it), measured in the PDF itself."""
    top, bottom = page_margins()
    fractions = []
    for page in PdfReader(pdf).pages:
        height = float(page.mediabox.height)
        baselines = []

        def visit(text, cm, tm, font, size, baselines=baselines, ceiling=height - top):
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            if text.strip() and bottom < y < ceiling:  # not the running header or footer
                baselines.append(y)

        page.extract_text(visitor_text=visit)
        area = height - top - bottom
        fractions.append((min(baselines, default=height - top) - bottom) / area)
    return fractions


def chapter_pages(pdf: Path) -> set[int]:
    """0-based pages where an appendix starts (each begins on a new page), from the PDF outline."""
    reader = PdfReader(pdf)

    def walk(items):
        for item in items:
            if isinstance(item, list):
                yield from walk(item)
            else:
                yield item

    return {reader.get_destination_page_number(o) for o in walk(reader.outline) if o.title.startswith("Apéndice")}


def test_no_page_is_more_than_a_third_empty_except_before_a_chapter(report):
    pdf = report["report"] / "report.pdf"
    fractions = empty_fractions(pdf)
    chapters = chapter_pages(pdf)
    assert len(chapters) == 2 and len(fractions) > 10
    loose = [n + 1 for n, empty in enumerate(fractions[:-1]) if empty > 1 / 3 and n + 1 not in chapters]
    assert loose == [], [f"{e:.2f}" for e in fractions]


def test_figures_float_wherever_the_text_before_them_ends(report, tmp_path):
    """The report with 0 to 32 more lines of text at its start: its figures land at other
    places of their pages; at least one of them then leaves a gap that floating fills."""
    shutil.copytree(report["report"], tmp_path / "report")
    config = write_config(tmp_path, tmp_path / "report", report["runs"])
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    intro = tmp_path / "templates" / "sections" / "01_introduccion.html.j2"
    original = intro.read_text()
    gaps_left, gaps_filled = [], []
    for lines in range(0, 40, 8):
        intro.write_text(original.replace("</h2>", "</h2>\n" + paragraph("relleno", lines), 1))
        result = runner.invoke(app, ["render", "--config", str(config), "--templates",
                                     str(tmp_path / "templates"), "--format", "html"])
        assert result.exit_code == 0, result.output
        html = (tmp_path / "report" / "report.html").read_text()
        for passes, gaps in ((0, gaps_left), (16, gaps_filled)):
            fills = render.paginate(html, tmp_path / "report", tmp_path / "templates", max_passes=passes)[1]
            gaps += [(lines, f.number) for f in fills if f.loose]
    assert gaps_left, "no filler leaves a gap under a figure any more: change the fillers"
    assert gaps_filled == []


def test_layout_is_deterministic(report, tmp_path):
    html = (report["report"] / "report.html").read_text()
    runs = [render.paginate(html, report["report"], TEMPLATES)[1] for _ in range(2)]
    assert runs[0] == runs[1]


# ----------------------------------------------------------------------------- synthetic pages


def lay_out(tmp_path: Path, body: str, passes: int = 16):
    """`body` laid out with the report's stylesheet (`passes` 0: as it comes, no figure
    moved): the WeasyPrint document and the fill of its pages."""
    shutil.copy(TEMPLATES / "report.css", tmp_path / "report.css")
    html = (f'<!DOCTYPE html><html lang="es"><head><link rel="stylesheet" href="report.css"></head>'
            f"<body><main>{body}</main></body></html>")
    return render.paginate(html, tmp_path, TEMPLATES, max_passes=passes)


def page_texts(document) -> list[str]:
    from weasyprint.formatting_structure import boxes

    texts = []
    for page in document.pages:
        words = [b.text for b in page._page_box.descendants() if isinstance(b, boxes.TextBox)]
        texts.append(" ".join(words))
    return texts


def paragraph(tag: str, lines: int) -> str:
    """A paragraph of about `lines` lines at the report's measure, named by `tag`."""
    return f"<p>{tag} " + " ".join(["palabra"] * (11 * lines)) + "</p>"


def figure(tag: str, cm: float) -> str:
    return (f'<figure id="figura-{tag}"><div style="height: {cm}cm; background: #ccc"></div>'
            f"<figcaption>{tag}</figcaption></figure>")


def test_text_after_a_figure_fills_the_gap_it_leaves(tmp_path):
    body = ("<section><h2>Uno</h2>" + paragraph("ANTES", 20) + figure("FIGURA", 14)
            + "".join(paragraph(f"DESPUES{i}", 4) for i in range(6)) + "</section>")
    assert lay_out(tmp_path, body, passes=0)[1][0].loose  # the figure does not fit under the first paragraph
    document, fills = lay_out(tmp_path, body)
    texts = page_texts(document)
    assert not any(f.loose for f in fills), fills
    assert "DESPUES0" in texts[0] and "FIGURA" in texts[1]


def test_a_figure_moves_ahead_of_the_text_that_ends_its_page(tmp_path):
    body = ("<section><h2>Uno</h2>" + paragraph("PRIMERO", 10) + paragraph("SEGUNDO", 6)
            + paragraph("TERCERO", 6) + figure("FIGURA", 11) + "</section>"
            "<section><h2>Dos</h2>" + paragraph("OTRA", 30) + "</section>")
    assert lay_out(tmp_path, body, passes=0)[1][0].loose
    document, fills = lay_out(tmp_path, body)
    texts = page_texts(document)
    assert not any(f.loose for f in fills), fills
    text = " ".join(texts)
    assert "FIGURA" in texts[0] and text.index("SEGUNDO") < text.index("FIGURA") < text.index("TERCERO")


def test_figures_moved_out_of_order_take_the_numbers_of_their_new_places():
    import xml.etree.ElementTree as ET

    def fig(n: int) -> str:
        return (f'<figure id="figura-{n}"><img alt="Figura {n}"/><figcaption><span class="label">Figura {n}.</span>'
                f' F{n}.</figcaption></figure>')

    # Figure 7 moved ahead of 5, passing over 6 (which did not fit the gap): 7, 5, 6 become 5, 6, 7.
    root = ET.fromstring('<main><p>Véanse la Figura 5 y las Figuras 4, 5 y 7; la Figura 50 no cambia.</p>'
                         '<figure id="figura-4"><figcaption><span class="label">Figura 4.</span> F4.</figcaption>'
                         f'</figure>{fig(7)}{fig(5)}{fig(6)}</main>')
    render._renumber_figures(root)
    text = ET.tostring(root, encoding="unicode")
    assert "la Figura 6 y las Figuras 4, 6 y 5; la Figura 50" in text
    figures = root.findall("figure")
    assert [f.get("id") for f in figures] == ["figura-4", "figura-5", "figura-6", "figura-7"]
    assert [next(f.find("figcaption").itertext()) for f in figures] == ["Figura 4.", "Figura 5.", "Figura 6.", "Figura 7."]
    assert ["".join(f.find("figcaption").itertext()).split()[-1] for f in figures[1:]] == ["F7.", "F5.", "F6."]
    assert [f.find("img").get("alt") for f in figures[1:]] == ["Figura 5", "Figura 6", "Figura 7"]


@pytest.mark.parametrize("filler", range(30, 44))
def test_tables_and_lists_split_with_their_header_and_never_one_row_alone(tmp_path, filler):
    rows = "".join(f"<tr><td>fila{i}</td><td>{i}</td></tr>" for i in range(12))
    items = "".join(f"<li>elemento{i}</li>" for i in range(6))
    body = (paragraph("RELLENO", filler) + '<div class="table-block"><table><caption>CUADRO</caption>'
            f"<thead><tr><th>COLUMNA</th><th>Valor</th></tr></thead><tbody>{rows}</tbody></table></div>"
            + paragraph("RELLENO", filler) + f"<ul>{items}</ul>")
    texts = page_texts(lay_out(tmp_path, body)[0])
    for kind, count in (("fila", 12), ("elemento", 6)):
        shown = [len(re.findall(rf"\b{kind}\d+\b", t)) for t in texts]
        assert sum(shown) == count and 1 not in shown, (kind, shown)
    for text in texts:
        if "fila" in text:
            assert "COLUMNA" in text  # the header repeats on each page of the table
    assert "CUADRO" in next(t for t in texts if "fila" in t)  # the caption stays with the first rows


def test_hyphenated_words_in_table_cells_do_not_break(tmp_path):
    from weasyprint.formatting_structure import boxes

    body = ('<table><tr><td style="width: 2.5cm">EfficientNet-Lite0 (fine-tuning) con fp32, channels-last</td>'
            f'<td>{paragraph("ancho", 3)}</td></tr></table>')
    document = lay_out(tmp_path, body)[0]
    cell = next(b.element for b in document.pages[0]._page_box.descendants() if b.element_tag == "td")
    lines = [" ".join(t.text for t in line.descendants() if isinstance(t, boxes.TextBox))
             for line in document.pages[0]._page_box.descendants()
             if isinstance(line, boxes.LineBox) and line.element is cell]
    assert len(lines) > 2  # the cell wraps
    assert not any(line.rstrip().endswith("-") for line in lines), lines


# ----------------------------------------------------------------------------- config appendix


def test_config_changes_are_the_settings_that_differ_from_the_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 7\n[data]\nroot = "/datos"\n[output]\nreport_dir = "r"\n'
                    '[training]\nepochs = 2\nbatch_size = 32\noptimizer = "adamw"\n[trainer]\naccelerator = "cpu"\n'
                    '[[experiments]]\nname = "a"\narchitecture = "alexnet"\noptimizer = "adamw"\n'
                    '[[experiments]]\nname = "b"\narchitecture = "alexnet"\nlearning_rate = 0.0003\n')
    config = load_config(path)
    changes = [(c["section"], c["key"], c["value"], c["default"]) for c in config_changes(config)]
    assert changes == [("", "seed", 7, 42), ("training", "epochs", 2, 5), ("training", "optimizer", "adamw", "adam"),
                       ("trainer", "accelerator", "cpu", "auto")]


def test_config_appendix_is_a_table_of_changes_with_the_file_hash(report):
    html = (report["report"] / "report.html").read_text()
    appendix = html[html.index("Apéndice A."):html.index("Apéndice B.")]
    digest = hashlib.sha256(report["config"].read_bytes()).hexdigest()
    assert config_hash(str(report["config"])) == digest[:16] and digest[:16] in appendix
    assert "<pre" not in appendix and "[[experiments]]" not in appendix
    table = appendix[appendix.index('<table class="repro settings"'):]
    keys = re.findall(r"<td><code>(\w+\.\w+)</code></td>", table)
    assert keys == ["training.epochs", "training.batch_size", "training.resize", "training.crop", "training.num_workers",
                    "training.max_images_per_class", "trainer.accelerator", "trainer.devices"]
