"""A report folder anyone can start: packaged config and templates, `init`, the dataset
downloaded when no folder was given."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from conftest import REPO, make_dataset
from monkeyreport import project
from monkeyreport.cli import app

runner = CliRunner()


def test_packaged_templates_and_configs_are_the_repository_folders():
    """One copy: the package's data is the top-level templates/ and configs/ (editable install)."""
    assert (project.packaged_templates() / "report.html.j2").read_text() == \
        (REPO / "templates" / "report.html.j2").read_text()
    assert project.packaged_config("offline").read_text() == (REPO / "configs" / "offline.toml").read_text()


def test_a_folder_uses_its_own_templates_and_config_else_the_packaged_ones(tmp_path):
    assert project.templates_for(tmp_path) == project.packaged_templates()
    assert project.config_for(tmp_path) == project.packaged_config()
    written = project.init(tmp_path / "mine", "smoke")
    assert written == [tmp_path / "mine" / "monkeyreport.toml", tmp_path / "mine" / "templates"]
    assert project.templates_for(tmp_path / "mine") == tmp_path / "mine" / "templates"
    assert project.config_for(tmp_path / "mine") == tmp_path / "mine" / "monkeyreport.toml"
    assert (tmp_path / "mine" / "monkeyreport.toml").read_text() == (REPO / "configs" / "smoke.toml").read_text()
    assert not list((tmp_path / "mine" / "templates").rglob("__init__.py"))


def test_init_never_overwrites_the_users_text(tmp_path):
    dest = tmp_path / "report"
    assert runner.invoke(app, ["init", str(dest)]).exit_code == 0
    section = dest / "templates" / "sections" / "07_conclusiones.html.j2"
    section.write_text("mi texto")
    again = runner.invoke(app, ["init", str(dest)])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    assert section.read_text() == "mi texto"
    assert runner.invoke(app, ["init", str(dest), "--force"]).exit_code == 0
    assert section.read_text() != "mi texto"
    assert runner.invoke(app, ["init", str(dest), "--profile", "huge"]).exit_code == 1


@pytest.fixture
def bare_folder(tmp_path, monkeypatch):
    """A folder with a config but no dataset, as the working directory."""
    shutil.copy(REPO / "configs" / "smoke.toml", tmp_path / "monkeyreport.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONKEYREPORT_DATA", raising=False)
    return tmp_path


def test_missing_dataset_is_downloaded_into_the_default_place(bare_folder, monkeypatch):
    import kagglehub

    def fetch(handle, path=None, *, force_download=False, output_dir=None):
        return str(make_dataset(bare_folder / output_dir))

    monkeypatch.setattr(kagglehub, "dataset_download", fetch)
    result = runner.invoke(app, ["eda"])
    assert result.exit_code == 0, result.output
    assert "downloading it" in result.output and "eda done" in result.output
    assert (bare_folder / "data" / "10-monkey-species" / "training").is_dir()
    assert (bare_folder / "report" / "smoke" / "eda" / "eda.json").is_file()


def test_without_network_the_build_says_how_to_place_the_data(bare_folder, monkeypatch):
    import kagglehub

    def offline(handle, path=None, *, force_download=False, output_dir=None):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    result = runner.invoke(app, ["build"])
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: could not download slothkong/10-monkey-species (ConnectionError")
    assert "unpack it into data/10-monkey-species" in error


def test_installed_wheel_starts_builds_and_rebuilds_a_report_folder(tmp_path, shared_dataset):
    """As a user who installed the package: init a folder elsewhere, build the smoke
    profile there, edit a template, rebuild, and find the edit in the PDF."""
    import site
    import subprocess
    import sys

    from pypdf import PdfReader

    def run(*args: str, cwd=tmp_path) -> str:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "report", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", str(tmp_path / "dist"), str(source))
    (wheel,) = (tmp_path / "dist").glob("monkeyreport-*.whl")
    run(sys.executable, "-m", "venv", str(tmp_path / "venv"))
    venv_site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    # Dependencies from this environment (torch is gigabytes); the package from the wheel.
    (venv_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    bin_dir = tmp_path / "venv" / "bin"
    run(str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel))
    where = run(str(bin_dir / "python"), "-c", "import monkeyreport; print(monkeyreport.__file__)")
    assert where.startswith(str(venv_site)), where

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(str(bin_dir / "monkeyreport"), "init", "informe", "--profile", "smoke", cwd=elsewhere)
    folder = elsewhere / "informe"
    run(str(bin_dir / "monkeyreport"), "build", "--data-dir", str(shared_dataset), cwd=folder)
    pdf = folder / "report" / "smoke" / "report.pdf"
    assert pdf.is_file()
    section = folder / "templates" / "sections" / "07_conclusiones.html.j2"
    section.write_text(section.read_text().replace("<h2>Conclusiones</h2>",
                                                    "<h2>Conclusiones</h2>\n<p>Texto revisado por el autor.</p>"))
    output = run(str(bin_dir / "monkeyreport"), "build", "--data-dir", str(shared_dataset), cwd=folder)
    assert "train unchanged, skipped" in output and "interpret unchanged, skipped" in output
    assert "render done" in output
    text = " ".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    assert "Texto revisado por el autor." in " ".join(text.split())
