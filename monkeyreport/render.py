"""The Spanish report: Jinja environment, HTML and PDF from the context of `context.py`.

Inputs are files only (see context.py); whether the report is rendered again is the
pipeline's decision (pipeline.py). This module never imports torch (nor
models, training or datamodule), so revising the text is fast and works on a machine that
only holds the results.
"""

from __future__ import annotations

import re
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monkeyreport import project, results, spanish_format
from monkeyreport.config import Config
from monkeyreport.context import FIGURE_MARK, build_context, experiment_rows
from monkeyreport.errors import MonkeyReportError
from monkeyreport.pipeline import Options, StageOutcome
from monkeyreport.results import ReportFiles

MAIN_TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
FORMATS = ("html", "pdf", "both")


class TemplateProblem(MonkeyReportError):
    """A template cannot be compiled or rendered; the message names file and line."""


@dataclass(frozen=True)
class RenderOutcome:
    outputs: list[Path]
    seconds: float
    pending: list[str]
    failed: list[str]
    problems: list[str]  # one line per result file that could not be read

    def summary(self) -> str:
        extra = ""
        if self.pending:
            extra += f", {len(self.pending)} pending"
        if self.failed:
            extra += f", {len(self.failed)} failed"
        if self.problems:
            extra += f", {len(self.problems)} unreadable result file(s)"
        return f"render done in {self.seconds:.1f} s{extra} -> {', '.join(str(p) for p in self.outputs)}"


# ----------------------------------------------------------------------------- jinja


def environment(templates_dir: Path):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=spanish_format.finalize,
    )
    env.filters.update(spanish_format.FILTERS)
    return env


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


NUMBERED = {"fig": ("figure", "figura"), "tab": ("table", "tabla")}  # mark kind -> element, id prefix


def number_figures(html: str, templates_dir: Path) -> str:
    """Replace each mark of a figure or table (context.figure_number; the templates' `tab`
    macro) by its number: figures, and tables, are numbered 1, 2, ... in the order in which
    the templates place them (`<figure id="figura-...">`, `<table id="tabla-...">`). A
    reference to one the report does not show is a template problem."""
    start, end = (re.escape(m) for m in FIGURE_MARK)
    order: dict[tuple[str, str], int] = {}
    for kind, (element, prefix) in NUMBERED.items():
        placed = re.finditer(f'<{element}\\b[^>]*\\bid="{prefix}-{start}{kind}:([^"]+?){end}"', html)
        for n, key in enumerate(dict.fromkeys(found.group(1) for found in placed), start=1):
            order[(kind, key)] = n

    def number(found: re.Match) -> str:
        kind, key = found.group(1), found.group(2)
        if (kind, key) not in order:
            what = "figure" if kind == "fig" else "table"
            raise TemplateProblem(f"{_display(templates_dir / MAIN_TEMPLATE, templates_dir)}: a reference to "
                                  f"{what} '{key}', which the report does not show")
        return str(order[(kind, key)])

    return re.sub(f"{start}(fig|tab):([^<>\"{end}]+){end}", number, html)


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


def render(config: Config, fmt: str = "both", strict: bool = False,
           templates_dir: Path | None = None) -> RenderOutcome:
    """Render report.html and/or report.pdf into the report folder from the results on disk
    (stats.json and figures.json included: the stages before it in pipeline.py)."""
    import time

    start = time.perf_counter()
    if fmt not in FORMATS:
        raise MonkeyReportError(f"--format: must be one of {', '.join(FORMATS)}, got '{fmt}'")
    templates_dir = Path(templates_dir) if templates_dir else project.templates_for(Path.cwd())
    if not templates_dir.is_dir():
        raise MonkeyReportError(f"{templates_dir}: templates folder not found")
    report_dir = config.report_dir
    outputs = ([report_dir / "report.html"] if fmt in ("html", "both") else []) + \
              ([report_dir / "report.pdf"] if fmt in ("pdf", "both") else [])
    statistics = results.Statistics.read_if_exists(ReportFiles(config.report_dir).statistics)
    if statistics is None:
        raise MonkeyReportError(f"{ReportFiles(config.report_dir).statistics}: not found; run `monkeyreport render`")
    rows = experiment_rows(config, statistics)
    pending = [r["name"] for r in rows if r["status"] == "pending"]
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    problems = list(dict.fromkeys([r["reason"] for r in rows if r["status"] == "unreadable"]
                                  + statistics.problems))
    if strict and (pending or failed):
        missing = [f"{n} (pending)" for n in pending] + [f"{n} (failed)" for n in failed]
        raise MonkeyReportError(f"--strict: missing results for {', '.join(missing)} in {config.runs_dir}")
    if strict and problems:
        raise MonkeyReportError(f"--strict: {problems[0]}")
    context = build_context(config, rows, statistics, templates_dir)
    html = number_figures(render_html(context, templates_dir), templates_dir)
    check_images(html, report_dir, templates_dir)
    css = templates_dir / STYLESHEET
    if css.is_file():
        results.write_text(report_dir / STYLESHEET, css.read_text(encoding="utf-8"))
    if fmt in ("pdf", "both"):
        write_pdf(html, report_dir, templates_dir, report_dir / "report.pdf")
    if fmt in ("html", "both"):
        results.write_text(report_dir / "report.html", html)
    return RenderOutcome(outputs, time.perf_counter() - start, pending, failed, problems)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's render stage: the report is written even with pending, failed or
    unreadable results (marked in it); `problems` names the unreadable files."""
    rendered = render(config, options.fmt, options.strict, options.templates)
    return StageOutcome(rendered.summary(), problems=rendered.problems, outputs=rendered.outputs)
