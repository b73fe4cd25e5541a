"""report.html in a real browser: every figure is drawn and Table 1 shows every recipe.

    python -m pytest -q tests/test_report_browser.py

A synthetic sweep with known recipes (``tests/synthetic_sweeps.py``) goes through
``analysis.report``; headless Chromium then opens the page with a small script added that, once the
page has loaded, writes each image's natural and shown size and each table's rows into the page,
which ``--dump-dom`` returns (``page_probe`` in ``docs/screenshots.py``). A figure the browser
cannot decode has a natural width of 0. Skipped where no Chromium is installed (Debian:
``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from analysis.report import ReportPaths, write_report
from tests.synthetic_sweeps import SyntheticTrial, log_sweep

ROOT = Path(__file__).resolve().parents[1]


def load_screenshots():
    """``docs/screenshots.py`` as a module (``docs/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("forgetless_docs_screenshots", ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshots = load_screenshots()
BROWSER = screenshots.find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install -y chromium; .ci/run installs it)"
)


def trial(parts: str, method: str, lr: str, id_id, id_ood, ood_id, ood_ood, **settings) -> SyntheticTrial:
    return SyntheticTrial(
        parts, method, lr, accuracy={"id_id": id_id, "id_ood": id_ood, "ood_id": ood_id, "ood_ood": ood_ood}, **settings
    )


TRIALS = (
    trial("llm", "full", "1e-05", [50, 70, 80], [60, 55, 52], [40, 30, 25], [30, 28, 26]),
    trial("llm", "lora", "1e-04", [50, 65, 78], [60, 61, 61], [40, 40, 38], [30, 30, 33], seed=0),
    trial("llm", "lora", "1e-04", [50, 66, 76], [60, 60, 59], [40, 39, 40], [30, 31, 29], seed=1),
    trial("projector", "full", "1e-06", [50, 55, 58], [60, 60, 63], [40, 40, 37], [30, 31, 34]),
)
RECIPES = {"llm · full · lr 1e-05": "1", "llm · lora · lr 1e-04": "2", "projector · full · lr 1e-06": "1"}
"""Table 1's rows: recipe -> its seeds."""
EXPERIMENT = "browser-check"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> ReportPaths:
    root = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{root}/mlflow.db"
    log_sweep(uri, EXPERIMENT, TRIALS, artifact_location=str(root / "artifacts"))
    return write_report(EXPERIMENT, uri, root / "report", log_artifacts=False)


@pytest.fixture(scope="module")
def probe(report: ReportPaths) -> dict:
    return screenshots.page_probe(BROWSER, report.report_html)


def test_the_browser_draws_every_figure(report: ReportPaths, probe: dict):
    figures = [path for path in report.figures if path.suffix == ".svg"]
    assert report.report_html.read_text().count("<img ") == len(figures) == len(probe["images"]) >= 3
    broken = [
        image["alt"]
        for image in probe["images"]
        if not (image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0)
    ]
    assert not broken, f"the browser could not draw {broken}"
    assert all(image["shownWidth"] > 100 and image["shownHeight"] > 100 for image in probe["images"]), probe["images"]


def test_table1_shows_every_recipe_with_its_seeds(probe: dict):
    table = next(table for table in probe["tables"] if table["className"] == "table1")
    recipe, seeds = table["header"].index("Recipe"), table["header"].index("Seeds")
    assert {row[recipe]: row[seeds] for row in table["rows"]} == RECIPES
    assert len(table["rows"]) == len(RECIPES) and table["shownHeight"] > 0


def test_the_trials_table_lists_every_trial(probe: dict):
    table = next(table for table in probe["tables"] if table["header"][:2] == ["Trial", "Run id"])
    names = sorted(row[0] for row in table["rows"])
    assert names == sorted(t.name for t in TRIALS)


def test_a_screenshot_of_the_report_shows_the_page(report: ReportPaths, tmp_path: Path):
    png = screenshots.report_screenshot(BROWSER, report.report_html, tmp_path / "report.png", width=1200)
    with Image.open(png) as image:
        assert image.width == 1200 and image.height > 1000
        colours = image.convert("RGB").getcolors(maxcolors=100_000)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) one colour: nothing was drawn"
