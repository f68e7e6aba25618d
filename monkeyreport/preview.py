"""`monkeyreport preview`: the report's HTML served on localhost, re-rendered on every edit.

A small HTTP server (standard library) serves the report folder. Pages it serves get one
extra line of JavaScript that listens to `/__events` (server-sent events); a watcher
(watchfiles) re-renders the HTML when a template, the stylesheet or the config changes
and then tells every open page to reload. Only the HTML is rendered: the PDF is written by
`render` and `build`. The report.html on disk stays exactly what `render` writes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from monkeyreport.config import Config
from monkeyreport.errors import MonkeyReportError

EVENTS_PATH = "/__events"
RELOAD_SCRIPT = (f'<script>new EventSource("{EVENTS_PATH}").onmessage = '
                 "() => location.reload();</script>")


@dataclass
class Reloads:
    """A counter of renders that waiting event streams watch."""

    count: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def bump(self) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_after(self, seen: int, timeout: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: self.count != seen, timeout)
            return self.count


class PreviewHandler(SimpleHTTPRequestHandler):
    """Files of the report folder; HTML pages with the reload script; the event stream."""

    reloads: Reloads
    stopping: threading.Event

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path == EVENTS_PATH:
            self._events()
        elif self.path in ("/", "/report.html"):
            self._page()
        else:
            super().do_GET()

    def _page(self) -> None:
        try:
            html = (Path(self.directory) / "report.html").read_text(encoding="utf-8")
        except OSError:
            self.send_error(404, "report.html not rendered yet")
            return
        body = html.replace("</body>", RELOAD_SCRIPT + "\n</body>").encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seen = self.reloads.count
        try:
            while not self.stopping.is_set():
                now = self.reloads.wait_after(seen, timeout=1.0)
                if now != seen:
                    seen = now
                    self.wfile.write(b"data: reload\n\n")
                else:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away or reloaded

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # figures redrawn under the same name
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the re-render lines


def watched_paths(config: Config, templates_dir: Path) -> list[Path]:
    """What a re-render depends on that a person edits: templates, stylesheet, config."""
    paths = [templates_dir]
    if config.source:
        paths.append(Path(config.source))
    return paths


def serve(config: Config, templates_dir: Path, render_html: Callable[[], None], host: str, port: int,
          echo: Callable[[str], None], ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Render once, serve, and re-render on every change until Ctrl-C (or `stop` is set)."""
    from watchfiles import watch

    render_html()
    reloads, stop = Reloads(), stop or threading.Event()
    handler = type("Handler", (PreviewHandler,), {"reloads": reloads, "stopping": stop})
    try:
        server = ThreadingHTTPServer((host, port), partial(handler, directory=str(config.report_dir)))
    except OSError as exc:
        raise MonkeyReportError(f"{host}:{port}: cannot serve the preview ({exc.strerror})") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://{host}:{server.server_address[1]}/"
    echo(f"preview at {url} (Ctrl-C stops it); watching {', '.join(map(str, watched_paths(config, templates_dir)))}")
    if ready:
        ready(url)
    try:
        for _changes in watch(*watched_paths(config, templates_dir), stop_event=stop, debounce=100, step=50):
            start = time.perf_counter()
            try:
                render_html()
            except MonkeyReportError as exc:  # a template error: say so, keep serving the last page
                echo(f"error: {exc}")
                continue
            reloads.bump()
            echo(f"re-rendered in {time.perf_counter() - start:.2f} s")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        echo("preview stopped")
