"""build: the whole pipeline on the smoke profile, and a render-only rebuild."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
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
    lines = [line for line in smoke["output"].splitlines() if line.split(" ")[0] in
             ("eda", "train", "summaries", "render", "build")]
    assert [line.split(" ")[0] for line in lines] == ["eda", "train", "summaries", "render", "build"], lines
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


def test_template_edit_rebuilds_only_the_report(smoke, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    section = templates / "sections" / "01_introduccion.html.j2"
    section.write_text(section.read_text().replace(
        "<h2>Introducción</h2>", "<h2>Introducción</h2>\n<p>Marcador de prueba editado.</p>"))
    done, seconds = run_build(smoke["config"], smoke["data"], smoke["report"], "--templates", str(templates))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "eda unchanged, skipped" in out and "train unchanged, skipped" in out
    assert "summaries unchanged, skipped" in out and "render done" in out
    assert "Marcador de prueba editado." in pdf_text(smoke["report"] / "report.pdf")
    print(f"render-only rebuild: {seconds:.1f} s")
    assert seconds < 30  # about 7 s on an idle 2-core machine; generous for loaded CI

    again, _ = run_build(smoke["config"], smoke["data"], smoke["report"], "--templates", str(templates))
    assert again.returncode == 0 and "render unchanged, skipped" in again.stdout
