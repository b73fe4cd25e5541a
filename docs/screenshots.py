"""python docs/screenshots.py --experiment NAME [--tracking-uri URI] [--report FILE] [--out DIR] [--width W]

Screenshots of a sweep for the docs, taken with headless Chromium (Debian: ``apt-get install -y
chromium``): its report page (``reports/<experiment>/report.html``, written by the sweep or by
``python -m analysis.report``) as ``<out>/<experiment>-report.png``, the whole page long, and the
MLflow UI's runs table of its experiment as ``<out>/<experiment>-mlflow-runs.png``. For a local
store (``sqlite:///mlflow.db``, the default) the script starts ``mlflow server`` on 127.0.0.1 on a
free port itself and stops it afterwards; an ``http(s)://`` tracking URI is opened as it is.

    python -m analysis.report --experiment demo-forgetting
    python docs/screenshots.py --experiment demo-forgetting --out docs

``page_probe`` is also what ``tests/test_report_browser.py`` uses to check that a report renders:
it opens a copy of the page with a small script added that writes, once the page has loaded, the
size of every image and the rows of every table into the page, and reads them back with
``--dump-dom``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages are importable
    sys.path.insert(0, str(ROOT))

from orchestrator.mlflow_bookkeeping import RUNS_VIEW  # noqa: E402 - after the path set-up above
from recipes.common.local_ports import free_port  # noqa: E402
from recipes.common.mlflow_server import mlflow_server_command  # noqa: E402
from recipes.common.redaction import redact_uri  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executable names of a Chromium-based browser, tried in this order."""
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
"""Flags of every run: headless, as root, with no network of its own (updates, sync, QUIC)."""
PROBE_ID = "forgetless-probe"
"""Id of the element the probe script writes its findings into."""
PROBE_SCRIPT = """<script>
window.addEventListener("load", async () => {
  const images = [...document.images];
  await Promise.allSettled(images.map((image) => image.decode()));
  const text = (cell) => cell.textContent.replace(/\\s+/g, " ").trim();
  const found = {
    title: document.title,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    images: images.map((image) => ({
      alt: image.alt, complete: image.complete, naturalWidth: image.naturalWidth,
      naturalHeight: image.naturalHeight, shownWidth: image.getBoundingClientRect().width,
      shownHeight: image.getBoundingClientRect().height,
    })),
    tables: [...document.querySelectorAll("table")].map((table) => ({
      className: table.className,
      header: [...table.querySelectorAll("thead th")].map(text),
      rows: [...table.querySelectorAll("tbody tr")].map((row) => [...row.cells].map(text)),
      shownHeight: table.getBoundingClientRect().height,
    })),
  };
  const out = document.createElement("pre");
  out.id = "PROBE_ID";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>""".replace("PROBE_ID", PROBE_ID)
"""Added before ``</body>`` of a copy of the page (the report itself holds no script)."""
BROWSER_TIMEOUT_S = 180
"""How long one browser run may take before it is stopped (a loaded machine is slow, not stuck)."""


class ScreenshotError(Exception):
    """A browser, a page or a server that did not do what was asked; the message says which."""


def find_browser() -> str | None:
    """The path of a Chromium-based browser on this machine, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def run_browser(browser: str, *arguments: str, timeout: float = BROWSER_TIMEOUT_S) -> str:
    """Run the browser headless with a fresh profile and ``arguments``; its standard output."""
    with tempfile.TemporaryDirectory(prefix="forgetless-chromium-") as profile:
        try:
            done = subprocess.run(
                [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *arguments],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"{browser} did not finish within {timeout:.0f} s: {' '.join(arguments)}") from None
    if done.returncode != 0:
        raise ScreenshotError(f"{browser} exited with status {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def page_probe(browser: str, page: Path, budget_ms: int = 10_000) -> dict:
    """What the browser rendered of ``page``: its size, every image's natural and shown size, every table's rows.

    A copy of the page with PROBE_SCRIPT is written next to it (so relative links resolve the same),
    loaded with ``--dump-dom`` and removed again.
    """
    page = Path(page).resolve()
    html = page.read_text(encoding="utf-8")
    if "</body>" not in html:
        raise ScreenshotError(f"{page} has no </body>: not an HTML page")
    copy = page.with_name(f".{page.stem}.probe.html")
    copy.write_text(html.replace("</body>", PROBE_SCRIPT + "\n</body>", 1), encoding="utf-8")
    try:
        dom = run_browser(browser, f"--virtual-time-budget={budget_ms}", "--dump-dom", copy.as_uri())
    finally:
        copy.unlink(missing_ok=True)
    match = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', dom, re.DOTALL)
    if not match:
        raise ScreenshotError(f"{page}: the page did not finish loading in the browser (no probe result)")
    return json.loads(unescape_text(match.group(1)))


def unescape_text(text: str) -> str:
    """Text content as --dump-dom serializes it (only &, < and > are escaped there)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def screenshot(browser: str, url: str, out: Path, width: int, height: int, budget_ms: int = 10_000) -> Path:
    """A PNG of ``url`` in a ``width`` x ``height`` window, once the page is idle for ``budget_ms`` (virtual time)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    run_browser(
        browser, f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url
    )
    if not out.is_file() or out.stat().st_size == 0:
        raise ScreenshotError(f"{browser} wrote no screenshot of {url}")
    return out


def report_screenshot(browser: str, report: Path, out: Path, width: int, max_height: int = 12_000) -> Path:
    """The whole report page (up to ``max_height`` pixels) as one PNG; fails on an image the browser could not show."""
    probe = page_probe(browser, report)
    broken = [image["alt"] for image in probe["images"] if not image["naturalWidth"]]
    if broken:
        raise ScreenshotError(f"{report}: the browser could not show {', '.join(broken)}")
    return screenshot(browser, Path(report).resolve().as_uri(), out, width, min(probe["height"], max_height))


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_ui(tracking_uri: str, timeout: float = 300) -> Iterator[str]:
    """The base URL of an MLflow UI for ``tracking_uri``: the server itself for http(s), else an
    ``mlflow server`` started here on 127.0.0.1 (stopped on exit; its log is shown if it does not start)."""
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri.rstrip("/")
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="forgetless-mlflow-ui-") as scratch:
        log = Path(scratch) / "server.log"
        with open(log, "w") as out:
            server = subprocess.Popen(
                mlflow_server_command(port, tracking_uri, str(Path(scratch) / "artifacts"), workers=1),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while not answers(f"{base}/health"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ScreenshotError(f"mlflow server did not start at {base}:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
            yield base
        finally:
            if server.poll() is None:
                os.killpg(server.pid, 15)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, 9)
                    server.wait()


def experiment_id(tracking_uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        raise ScreenshotError(f"no experiment {experiment!r} in {redact_uri(tracking_uri)}")
    return found.experiment_id


def runs_table_screenshot(browser: str, tracking_uri: str, experiment: str, out: Path, width: int, height: int) -> Path:
    """The MLflow UI's runs table of ``experiment`` (the model-training view, not the GenAI one) as a PNG."""
    view = RUNS_VIEW.format(experiment_id=experiment_id(tracking_uri, experiment))
    with mlflow_ui(tracking_uri) as base:
        return screenshot(browser, f"{base}/{view}", out, width, height, budget_ms=30_000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__.split("\n\n")[1])
    parser.add_argument("--experiment", required=True, help="the sweep's MLflow experiment (the grid's name)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow URI (default: %(default)s)")
    parser.add_argument(
        "--report", type=Path, default=None, help="the report page (default: reports/<experiment>/report.html)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of the PNG files (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels (default: %(default)s)")
    parser.add_argument(
        "--height",
        type=int,
        default=900,
        help="window height of the MLflow UI (default: %(default)s; the report is shot whole)",
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="only the report page")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    browser = find_browser()
    if browser is None:
        print("error: no Chromium found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    report = args.report or Path("reports") / args.experiment / "report.html"
    if not report.is_file():
        print(
            f"error: no report at {report}: run python -m analysis.report --experiment {args.experiment}",
            file=sys.stderr,
        )
        return 2
    try:
        written = [report_screenshot(browser, report, args.out / f"{args.experiment}-report.png", args.width)]
        if not args.skip_mlflow:
            written.append(
                runs_table_screenshot(
                    browser,
                    args.tracking_uri,
                    args.experiment,
                    args.out / f"{args.experiment}-mlflow-runs.png",
                    args.width,
                    args.height,
                )
            )
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
