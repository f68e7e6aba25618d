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
from dataclasses import dataclass, field
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
    loose_pages: list[int] = field(default_factory=list)  # PDF pages more than MAX_EMPTY empty

    def summary(self) -> str:
        extra = ""
        if self.pending:
            extra += f", {len(self.pending)} pending"
        if self.failed:
            extra += f", {len(self.failed)} failed"
        if self.problems:
            extra += f", {len(self.problems)} unreadable result file(s)"
        if self.loose_pages:
            extra += f", page(s) {', '.join(map(str, self.loose_pages))} more than a third empty"
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


def write_pdf(html: str, report_dir: Path, templates_dir: Path, path: Path) -> list[PageFill]:
    """Lay the report out (`paginate`), write it and return how full each page is."""
    document, fills = paginate(html, report_dir, templates_dir)
    with results.atomic_path(path) as tmp:
        document.write_pdf(tmp)
    return fills


# ----------------------------------------------------------------------------- page layout
#
# WeasyPrint has no floats at the top of a page: a figure that does not fit in what is left
# of a page moves whole to the next one and leaves a gap. `paginate` lays the document out,
# finds the first page left more than MAX_EMPTY empty by such a figure, moves the blocks
# around that figure as LaTeX would float it, and lays it out again, one page per pass.
# Only the PDF's order changes; report.html keeps the order of the templates.

MAX_EMPTY = 1 / 3  # the most of a page's content area that may stay empty, unless a chapter follows
FORCED_BREAKS = frozenset({"page", "left", "right", "recto", "verso"})
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
FLOW_PARENTS = frozenset({"section", "main", "body"})  # a figure moves among the children of these
HYPHENATED = re.compile(r"\w+(?:-\w+)+")


@dataclass(frozen=True)
class PageFill:
    number: int  # 1-based
    empty: float  # fraction of the content area below the page's lowest line, image or table row
    chapter_follows: bool  # the next page starts with a forced break (an appendix), or there is none

    @property
    def loose(self) -> bool:
        return self.empty > MAX_EMPTY and not self.chapter_follows


@dataclass
class _Page:
    """One laid-out page: the outermost box of each element on it, its lines, images and
    table rows (each with the boxes above it), the bottom of its content and of its
    content area."""

    blocks: dict[Any, list[Any]]
    leaves: list[tuple[Any, tuple[Any, ...]]]
    bottom: float
    limit: float
    height: float

    def first_leaf(self) -> tuple[Any, tuple[Any, ...]] | None:
        return self.leaves[0] if self.leaves else None

    def height_of(self, element) -> float:
        return sum(box.margin_height() for box in self.blocks.get(element, ()))


def _page(page) -> _Page:
    from weasyprint.formatting_structure import boxes

    blocks: dict[Any, list[Any]] = {}
    leaves: list[tuple[Any, tuple[Any, ...]]] = []

    def walk(box, above: tuple[Any, ...]) -> None:
        if not above or box.element is not above[-1].element:
            blocks.setdefault(box.element, []).append(box)
        if isinstance(box, (boxes.LineBox, boxes.ReplacedBox, boxes.TableRowBox)):
            leaves.append((box, above))
        for child in getattr(box, "children", ()):
            if isinstance(child, boxes.Box):
                walk(child, above + (box,))

    page_box = page._page_box
    for child in page_box.children:
        if not isinstance(child, boxes.MarginBox):
            walk(child, ())
    top = page_box.content_box_y()
    bottom = max((b.position_y + b.margin_height() for b, _ in leaves), default=top)
    return _Page(blocks, leaves, bottom, top + page_box.height, page_box.height)


def _starts_chapter(page: _Page, before: _Page) -> bool:
    """Whether `page` begins with a forced break: one of the boxes above its first line
    (or image) starts on it and has `break-before: page`."""
    first = page.first_leaf()
    if first is None:
        return False
    return any(b.style["break_before"] in FORCED_BREAKS and b.element not in before.blocks
               for b in first[1] + (first[0],))


def page_fills(document) -> list[PageFill]:
    """How empty each page of a laid-out WeasyPrint document is."""
    pages = [_page(p) for p in document.pages]
    return _fills(pages)


def _fills(pages: list[_Page]) -> list[PageFill]:
    return [PageFill(n, (p.limit - p.bottom) / p.height,
                     n == len(pages) or _starts_chapter(pages[n], p))
            for n, p in enumerate(pages, start=1)]


def paginate(html: str, report_dir: Path, templates_dir: Path,
             max_passes: int = 16) -> tuple[Any, list[PageFill]]:
    """The WeasyPrint document of `html` with figures floated so that no page is more than
    MAX_EMPTY empty where text can fill it, and the fill of each page. Hyphenated words in
    table cells ("fine-tuning", "EfficientNet-Lite0") do not break at their hyphen."""
    import logging
    import xml.etree.ElementTree as ET

    from weasyprint import HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    fetcher = url_fetcher([report_dir, templates_dir])
    base_url = report_dir.resolve().as_uri() + "/"

    def parsed(text: str):
        return HTML(string=text, base_url=base_url, url_fetcher=fetcher)

    def serialised(root) -> str:
        return "<!DOCTYPE html>\n" + ET.tostring(root, encoding="unicode", method="html")

    root = parsed(html).etree_element
    for cell in root.iter():
        if cell.tag in ("td", "th"):
            _keep_hyphenated(cell)
    source = parsed(serialised(root))
    handled: set[str] = set()
    for _ in range(max_passes):
        document = source.render()
        pages = [_page(p) for p in document.pages]
        fills = _fills(pages)
        loose = [f.number - 1 for f in fills if f.loose and f.number < len(pages)]
        if not any(_float_figure(source.etree_element, pages, n, handled) for n in loose):
            return document, fills
        source = parsed(serialised(source.etree_element))
    document = source.render()
    return document, page_fills(document)


def _keep_hyphenated(element) -> None:
    """Wrap each hyphenated word of `element`'s text in <span class="nobr">."""
    import xml.etree.ElementTree as ET

    def spans(text: str) -> tuple[str, list]:
        parts = HYPHENATED.split(text)
        words = HYPHENATED.findall(text)
        made = []
        for word, after in zip(words, parts[1:]):
            span = ET.Element("span", {"class": "nobr"})
            span.text, span.tail = word, after
            made.append(span)
        return parts[0], made

    if element.tag == "code":
        return
    for child in list(element):
        _keep_hyphenated(child)
        if child.tail and HYPHENATED.search(child.tail):
            child.tail, made = spans(child.tail)
            at = list(element).index(child) + 1
            element[at:at] = made
    if element.text and HYPHENATED.search(element.text):
        element.text, made = spans(element.text)
        element[0:0] = made


def _float_figure(root, pages: list[_Page], n: int, handled: set[str]) -> bool:
    """Fill the gap at the bottom of page `n` (0-based), left by a figure that moved whole to
    page n+1, as a float would: move the blocks that follow the figure in its subsection
    ahead of it; else move the figure ahead of the blocks that end page n; else move ahead
    of it what follows it in its section, later subsections included; and when the figure
    has moved already, move ahead of it a later figure of its section that fits the gap.
    Each figure (by its id) moves once (in `handled`), so the passes end. Returns whether
    the tree changed."""
    page, following = pages[n], pages[n + 1]
    first = following.first_leaf()
    parents = {child: parent for parent in root.iter() for child in parent}
    block = first[0].element if first else None
    while block is not None and (block not in parents or parents[block].tag not in FLOW_PARENTS):
        block = parents.get(block)
    if block is None:
        return False
    siblings = list(parents[block])
    at = start = siblings.index(block)
    while at < len(siblings) and siblings[at].tag in HEADINGS:
        at += 1  # a heading kept with the figure under it
    if at == len(siblings) or siblings[at].tag != "figure":
        return False
    figure = siblings[at]
    gap = page.limit - page.bottom
    heights = {e: sum(p.height_of(e) for p in pages[n + 1:]) for e in siblings[at + 1:]}
    if figure.get("id", "") in handled:  # it moved once already: a later figure that fits may go first
        later = _later_figure(siblings, at, heights, gap, handled)
        if later is None:
            return False
        handled.add(later.get("id", ""))
        parents[later].remove(later)
        position = list(parents[figure]).index(figure)
        parents[figure].insert(position, later)
        _renumber_figures(root)
        return True
    within = _blocks_after(siblings, at, heights, gap, subsections=False)
    across = _blocks_after(siblings, at, heights, gap, subsections=True)
    earlier = _shortest(siblings, _blocks_before(siblings, at, page, pages[n - 1] if n else None),
                        lambda chosen: gap + sum(page.height_of(e) for e in chosen) >= following.height_of(figure))
    if sum(heights[e] for e in within) >= gap - MAX_EMPTY * page.height:
        moved, before = within, figure
    elif earlier and start == at:
        moved, before = [figure], earlier[0]
    elif across:
        moved, before = across, figure
    else:
        return False
    handled.add(figure.get("id", ""))
    parent = parents[figure]
    for element in moved:
        parent.remove(element)
    position = list(parent).index(before)
    parent[position:position] = moved
    return True


def _blocks_after(siblings: list, at: int, heights: dict, gap: float, subsections: bool) -> list:
    """The blocks after the figure at `at`, passing over further figures, that fill `gap`
    (the last one possibly in part, never a heading): up to the next heading, or with
    `subsections` up to the next h1/h2."""
    chosen, total = [], 0.0
    for element in siblings[at + 1:]:
        if element.tag == "figure":
            continue
        if (total >= gap and chosen[-1].tag not in HEADINGS) or element.tag in ("h1", "h2") \
                or (element.tag in HEADINGS and not subsections):
            break
        chosen.append(element)
        total += heights[element]
    while chosen and chosen[-1].tag in HEADINGS:
        chosen.pop()
    return chosen


def _later_figure(siblings: list, at: int, heights: dict, gap: float, handled: set[str]):
    """The first figure after the one at `at`, in its section, short enough for `gap` and not
    moved before; None when there is none."""
    for element in siblings[at + 1:]:
        if element.tag in ("h1", "h2"):
            break
        if element.tag == "figure" and element.get("id", "") not in handled and 0 < heights[element] <= gap:
            return element
    return None


FIGURE_LABEL = re.compile(r"Figura (\d+)\.")
FIGURE_REFERENCE = re.compile(r"\b(Figuras? )(\d+(?:(?:, | y )\d+)*)")


def _renumber_figures(root) -> None:
    """Figures are numbered in the order they appear (number_figures); after a figure moved
    ahead of others, give them their numbers in the new order, in their captions, their ids
    and every reference of the text."""
    old = []
    for figure in root.iter("figure"):
        label = next((e for e in figure.iter() if e.get("class") == "label"), None)
        found = FIGURE_LABEL.match(label.text or "") if label is not None else None
        if found:
            old.append(found.group(1))
    new = dict(zip(old, sorted(old, key=int)))  # the k-th figure in the text takes the k-th number

    def renumbered(text: str | None) -> str | None:
        if not text:
            return text
        return FIGURE_REFERENCE.sub(lambda m: m.group(1) + re.sub(r"\d+", lambda d: new.get(d.group(0), d.group(0)),
                                                                  m.group(2)), text)

    for element in root.iter():
        element.text, element.tail = renumbered(element.text), renumbered(element.tail)
        for key in ("id", "alt"):
            value = element.get(key)
            if value and (found := re.fullmatch(r"(figura-|Figura )(\d+)", value)):
                element.set(key, found.group(1) + new.get(found.group(2), found.group(2)))


def _blocks_before(siblings: list, at: int, page: _Page, previous: _Page | None) -> list:
    """The blocks (text and tables) that end `page` before the figure at `at`, nearest
    first, each starting on that page; never past a heading or another figure."""
    chosen = []
    for element in reversed(siblings[:at]):
        if element.tag in HEADINGS or element.tag == "figure" or element not in page.blocks \
                or (previous and element in previous.blocks):
            break
        chosen.append(element)
    return chosen


def _shortest(siblings: list, candidates: list, enough) -> list | None:
    """The shortest run of `candidates` (nearest first) that is `enough`, in document order,
    never one right after a paragraph that ends with a colon (it introduces what follows)."""
    for k in range(1, len(candidates) + 1):
        chosen = candidates[:k]
        index = siblings.index(chosen[-1])
        if enough(chosen) and not (index and _introduces(siblings[index - 1])):
            return list(reversed(chosen))
    return None


def _introduces(element) -> bool:
    return element.tag == "p" and "".join(element.itertext()).rstrip().endswith(":")


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
    loose = []
    if fmt in ("pdf", "both"):
        fills = write_pdf(html, report_dir, templates_dir, report_dir / "report.pdf")
        loose = [f.number for f in fills if f.loose]
    if fmt in ("html", "both"):
        results.write_text(report_dir / "report.html", html)
    return RenderOutcome(outputs, time.perf_counter() - start, pending, failed, problems, loose)


def run_stage(config: Config, options: Options) -> StageOutcome:
    """The pipeline's render stage: the report is written even with pending, failed or
    unreadable results (marked in it); `problems` names the unreadable files."""
    rendered = render(config, options.fmt, options.strict, options.templates)
    return StageOutcome(rendered.summary(), problems=rendered.problems, outputs=rendered.outputs)
