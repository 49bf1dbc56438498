"""The HTML report of a real run, opened in a real headless browser (Debian's chromium): it
draws a page that is not blank, and it requests nothing from the network.

Chromium's own network log (``--log-net-log``) lists every URL request; the page's are those
whose network isolation key is the page's ``file://`` site (the browser's own background
requests have other keys). A control page with one remote image shows that the check finds
a request when there is one. Without chromium these tests skip locally, and fail under CI
(``NBTL_CI=1``, set by ``.ci/run``, which installs chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

# Quiet browser: no sync, updates, component downloads or first-run work, a private profile,
# and every host name unresolvable (a request that slipped through would still be logged).
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-default-apps",
                 "--no-first-run", "--no-default-browser-check",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (apt-get install -y chromium fonts-dejavu-core)"
    if os.environ.get("NBTL_CI"):
        pytest.fail(f"{reason}: under CI (NBTL_CI) the browser test must run")
    pytest.skip(reason)


def open_page(chromium: str, page: Path, folder: Path, height: int = 4000
              ) -> tuple[np.ndarray, list[str]]:
    """Screenshot ``page`` (as a grey-level array) and the URLs it requested."""
    shot, log = folder / f"{page.stem}.png", folder / f"{page.stem}-netlog.json"
    subprocess.run([chromium, *BROWSER_FLAGS, f"--user-data-dir={folder / 'profile'}",
                    f"--log-net-log={log}", f"--window-size=1280,{height}",
                    f"--screenshot={shot}", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(shot).convert("L"), dtype=float), page_requests(log)


def page_requests(netlog: Path) -> list[str]:
    """URLs of the requests started on behalf of a page opened from a file."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "url" in e.get("params", {})
            and str(e["params"].get("network_isolation_key", "")).startswith("file://")]


@pytest.fixture(scope="module")
def run_files(sample_dir, tmp_path_factory) -> Path:
    """nbtl-recommend on the bundled sample with a short --validate, --html and --plot."""
    folder = tmp_path_factory.mktemp("html-run")
    subprocess.run(
        [sys.executable, "-m", "recommender", str(sample_dir), "--max-per-class", "5",
         "--workers", "0", "--validate", "--validate-seeds", "2", "--validate-epochs", "2",
         "--validate-size", "32", "--set", "reinit_top_blocks=1", "--quiet",
         "--json", str(folder / "result.json"), "--html", str(folder / "report.html"),
         "--plot", str(folder / "profile.png")],
        check=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return folder


def test_the_report_of_a_real_run_draws_a_page_that_is_not_blank(chromium, run_files):
    pixels, _ = open_page(chromium, run_files / "report.html", run_files)
    assert pixels.std() > 20  # text, tables and figures, not one flat colour
    assert (pixels < 128).mean() > 0.01  # dark ink over more than a percent of the page


def test_the_page_requests_nothing_from_the_network(chromium, run_files):
    _, requests = open_page(chromium, run_files / "report.html", run_files)
    assert requests == []


def test_the_request_check_finds_a_remote_image(chromium, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>c</title>'
                       '</head><body><p>control</p><img src="http://example.invalid/x.png">'
                       "</body></html>")
    _, requests = open_page(chromium, control, tmp_path, height=600)
    assert requests == ["http://example.invalid/x.png"]


def test_the_real_page_has_every_section_and_marks_the_reinitialised_block(run_files):
    from test_html import check  # pytest puts tests/ on the path (rootdir-less modules)

    page = (run_files / "report.html").read_text()
    checker = check(page)
    assert checker.problems == [] and checker.stack == []
    assert checker.sections == ["verdict", "profile", "groups", "settings", "measures",
                                "validation", "dataset", "model"]
    doc = json.loads((run_files / "result.json").read_text())
    top = doc["measures"]["blocks"][-1]
    assert f'id="reinit-{top}"' in page
    for run in doc["validation"]["settings"]["recommended"]["runs"]:
        assert len(run["curve"]) == 2  # one record per --validate-epochs


def test_plot_writes_the_profile_figure_as_png(run_files):
    image = Image.open(run_files / "profile.png")
    assert image.format == "PNG" and image.size[0] > 800
    assert np.asarray(image.convert("L"), dtype=float).std() > 20
