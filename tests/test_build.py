"""build: the whole pipeline on the smoke profile, and a render-only rebuild."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from monkeyreport import pipeline
from monkeyreport.results import ReportFiles
from test_render import SPEC_HEADINGS, expected_rows, pdf_text, table1_rows, write_config

MONKEYREPORT = [str(Path(sys.executable).parent / "monkeyreport")]


def run_build(config: Path, data: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([*MONKEYREPORT, "build", "--config", str(config), "--data-dir", str(data),
                           "--out", str(out), *extra], capture_output=True, text=True, cwd=REPO)
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_dataset) -> dict:
    tmp = tmp_path_factory.mktemp("build")
    config = write_config(tmp, tmp / "report", tmp / "runs")
    done, seconds = run_build(config, shared_dataset, tmp / "report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"tmp": tmp, "config": config, "report": tmp / "report", "runs": tmp / "runs",
            "output": done.stdout, "seconds": seconds, "data": shared_dataset}


def test_smoke_build_end_to_end(smoke):
    stages = [*pipeline.STAGE_NAMES, "build"]
    lines = [line for line in smoke["output"].splitlines() if line.split(" ")[0] in stages]
    assert [line.split(" ")[0] for line in lines] == stages, lines
    assert all(" done in " in line or " finished in " in line for line in lines), lines
    for stage in pipeline.STAGE_NAMES:
        assert ReportFiles(smoke["report"]).stamp(stage).is_file(), stage
    text = pdf_text(smoke["report"] / "report.pdf")
    for heading in SPEC_HEADINGS:
        assert heading in text, heading
    rows = table1_rows(text)
    assert rows == expected_rows(smoke["config"], smoke["runs"]) and len(rows) == 7
    for n in range(1, 12):
        assert f"Figura {n}." in text, n
    assert "pesos aleatorios" in text
    for arch in ("vanilla_cnn", "alexnet", "resnet34", "efficientnet_b0"):
        assert (smoke["report"] / "models" / f"{arch}.json").is_file()
    print(f"smoke build: {smoke['seconds']:.1f} s")


def test_smoke_build_computes_on_the_cpu_fast_path_and_says_so(smoke):
    """smoke.toml leaves precision and memory format to "auto": every run measures the
    layouts (and precisions, where the CPU has bf16) it could use, takes the fastest, and
    the appendix's training table states the choice."""
    html = (smoke["report"] / "report.html").read_text()
    words = {"32-true": "fp32", "bf16-mixed": "bf16 mixta"}
    for run in sorted(smoke["runs"].glob("*/metrics.json")):
        compute = json.loads(run.read_text())["compute"]
        assert compute["chosen"] in ("measured", "no native bf16")
        steps = compute["seconds_per_step"]
        assert {name.split()[0] for name in steps} == {"channels-last", "contiguous"}
        fastest = min(steps, key=steps.get)
        assert fastest == f"{compute['memory_format'].replace('_', '-')} {compute['precision']}"
        layout = "channels-last" if compute["memory_format"] == "channels_last" else "NCHW"
        assert f"<td>{words[compute['precision']]}, {layout}</td>" in html
    assert "La columna «Cálculo» indica la precisión aritmética" in html
    assert "usa la más rápida; los\ntiempos medidos quedan" in html


def test_template_edit_rebuilds_only_the_report(smoke, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    section = templates / "sections" / "01_introduccion.html.j2"
    section.write_text(section.read_text().replace(
        "<h2>Introducción</h2>", "<h2>Introducción</h2>\n<p>Marcador de prueba editado.</p>"))
    done, seconds = run_build(smoke["config"], smoke["data"], smoke["report"], "--templates", str(templates))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for stage in ("eda", "train", "summaries", "interpret", "stats", "figures"):
        assert f"{stage} unchanged, skipped" in out, (stage, out)
    assert "render done" in out
    assert "Marcador de prueba editado." in pdf_text(smoke["report"] / "report.pdf")
    print(f"render-only rebuild: {seconds:.1f} s")  # a benchmark figure, not an assertion

    again, _ = run_build(smoke["config"], smoke["data"], smoke["report"], "--templates", str(templates))
    assert again.returncode == 0 and "render unchanged, skipped" in again.stdout


def test_counts_in_the_text_are_those_of_the_images_used(smoke):
    """The smoke profile validates on 6 images per class: the text counts those, and the
    leaked ones among them, not the whole dataset's."""
    import json

    statistics = json.loads((smoke["report"] / "stats" / "stats.json").read_text())
    (first, *_) = statistics["experiments"].values()
    used, clean, leaked = first["n_val"], first["leak_free"]["accuracy"]["n"], first["n_leaked"]
    assert used == 60 and 0 < leaked < 56 and clean + first["leaked"]["accuracy"]["n"] == first["n_photographs"]
    import re

    html = (smoke["report"] / "report.html").read_text()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert (f"Los modelos de este estudio se validan con {used} imágenes, de las cuales {leaked} "
            "tienen esa copia") in text
    assert f"Como {leaked} de las {used} imágenes de validación usadas" in text
    assert f"La validación sin duplicados cubre {clean} de las {used} imágenes" in text
    assert "como máximo 6 imágenes por clase y partición: 60 de entrenamiento y 60 de validación" in text
