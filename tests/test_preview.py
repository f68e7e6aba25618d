"""monkeyreport preview: served on localhost, re-rendered and reloaded when a template changes."""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from monkeyreport.config import load_config
from monkeyreport.preview import EVENTS_PATH, RELOAD_SCRIPT, serve
from monkeyreport.pipeline import Options, render_report

from test_render import copy_project, project  # noqa: F401  (module fixture reused)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# CI installs the browser and sets this: there, its absence is a failure, not a skip.
REQUIRE_BROWSER = os.environ.get("MONKEYREPORT_REQUIRE_BROWSER") == "1"


class Preview:
    """`serve` in a thread over a copy of the fake project with its own templates."""

    def __init__(self, p: dict[str, Path], templates: Path) -> None:
        self.templates = templates
        self.lines: list[str] = []
        self.stop = threading.Event()
        ready = threading.Event()
        config = load_config(p["config"])

        def render_html() -> None:
            # As `monkeyreport preview` does: statistics, figures and the HTML, each when stale.
            render_report(load_config(p["config"]), Options(fmt="html", templates_dir=templates,
                                                            echo=lambda _: None), force=False)

        def started(url: str) -> None:
            self.url = url
            ready.set()

        self.thread = threading.Thread(target=serve, daemon=True, kwargs=dict(
            config=config, templates_dir=templates, render_html=render_html, host="127.0.0.1", port=0,
            echo=self.lines.append, ready=started, stop=self.stop))
        self.thread.start()
        assert ready.wait(60), self.lines

    def edit_conclusions(self, marker: str) -> None:
        section = self.templates / "sections" / "07_conclusiones.html.j2"
        section.write_text(section.read_text().replace("<h2>Conclusiones</h2>",
                                                        f'<h2>Conclusiones</h2>\n<p id="marca">{marker}</p>'))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def preview(project, tmp_path):  # noqa: F811
    p = copy_project(project, tmp_path)
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    running = Preview(p, templates)
    yield running
    running.close()


def test_served_page_reloads_itself_and_the_file_on_disk_stays_clean(preview):
    page = urllib.request.urlopen(preview.url, timeout=10).read().decode()
    assert RELOAD_SCRIPT in page and "Reporte 4" in page
    css = urllib.request.urlopen(preview.url + "report.css", timeout=10).read().decode()
    assert "@page" in css
    on_disk = (Path(report_folder(preview)) / "report.html").read_text()
    assert RELOAD_SCRIPT not in on_disk
    assert preview.url.startswith("http://127.0.0.1:")


def report_folder(preview: Preview) -> Path:
    return preview.templates.parent / "report"


def test_an_edit_is_announced_on_the_event_stream(preview):
    stream = urllib.request.urlopen(preview.url.rstrip("/") + EVENTS_PATH, timeout=10)
    preview.edit_conclusions("MARCA-EVENTO")
    line = b""
    while not line.startswith(b"data:"):
        line = stream.readline()
    assert line.strip() == b"data: reload"
    assert "MARCA-EVENTO" in (report_folder(preview) / "report.html").read_text()
    assert any(line.startswith("re-rendered in") for line in preview.lines)


def test_a_template_error_is_reported_and_the_preview_goes_on(preview):
    section = preview.templates / "sections" / "07_conclusiones.html.j2"
    good = section.read_text()
    section.write_text(good + "{% endif %}\n")
    deadline = time.monotonic() + 10
    while not any(line.startswith("error: ") for line in preview.lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("07_conclusiones.html.j2" in line for line in preview.lines if line.startswith("error: "))
    section.write_text(good.replace("<h2>Conclusiones</h2>", "<h2>Conclusiones</h2><p>VUELVE</p>"))
    while "VUELVE" not in (report_folder(preview) / "report.html").read_text():
        assert time.monotonic() < deadline + 10
        time.sleep(0.1)


def test_headless_chromium_shows_the_edit(preview):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        if REQUIRE_BROWSER:
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are required here")
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(preview.url)
        assert "Conclusiones" in driver.page_source and 'id="marca"' not in driver.page_source
        time.sleep(0.5)  # the page opens its event stream
        start = time.monotonic()
        preview.edit_conclusions("MARCA-NAVEGADOR")
        while 'id="marca"' not in driver.page_source:
            assert time.monotonic() - start < 20, "the page never showed the edit"
            time.sleep(0.05)
        assert driver.find_element("id", "marca").text == "MARCA-NAVEGADOR"
        print(f"edit shown in the browser after {time.monotonic() - start:.2f} s")
    finally:
        driver.quit()
