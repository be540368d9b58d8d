"""What a newcomer sees, in a real browser (playwright driving the system's Chromium; nothing is
downloaded): the MLflow UI at the URL the study prints shows the nested trial runs, and report.html
shows rendered text (no raw Markdown) and every figure.

In CI (``CI=true``) a missing Chromium or playwright fails these tests (.ci/run installs both);
elsewhere they are skipped with the reason.
"""

import os
import re
import shutil

import pytest

from tests.ablations.conftest import run_cli, write_study
from tests.ablations.helpers import free_port as _free_port
from tests.ablations.helpers import serve_mlflow, stop_server

pytestmark = pytest.mark.slow


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must provide it (.ci/run installs it)")
    pytest.skip(f"{reason} (apt-get install chromium; pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    path = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if path is None:
        _missing("no chromium on PATH")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A tiny study run to the end through the CLI (its report, its MLflow store, its printed lines)."""
    folder = tmp_path_factory.mktemp("browser")
    proc = run_cli(str(write_study(folder)), cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc.stderr


def test_the_printed_experiment_url_shows_the_nested_trial_runs(browser, finished_study):
    folder, err = finished_study
    url = re.search(r"then open (http://127\.0\.0\.1:5000/#/experiments/\S+)", err).group(1)
    assert "workflowType=machine_learning" in url
    port = _free_port()
    server = serve_mlflow(f"sqlite:///{folder}/mlflow.db", port)
    try:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url.replace(":5000", f":{port}"))
        page.get_by_text(re.compile(r"^tiny-\d{8}-\d{6}$")).first.wait_for(timeout=60_000)  # the parent run
        if not page.get_by_text("mto-s0", exact=True).count():  # nested runs are folded under their parent
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # the [+] of the parent
        for trial in ("simmim-s0", "mto-s0"):
            page.get_by_text(trial, exact=True).first.wait_for(timeout=30_000)
        page.close()
    finally:
        stop_server(server)


def test_report_html_shows_rendered_text_and_every_figure(browser, finished_study):
    folder, _ = finished_study
    report = next(folder.glob("reports/tiny/*/report.html"))
    page = browser.new_page()
    page.goto(report.as_uri())
    text = page.inner_text("body")
    assert "**" not in text and "`" not in text, [l for l in text.splitlines() if "**" in l or "`" in l]
    assert page.locator("strong").count() > 0  # the bold of the Markdown legend, rendered
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 3 and all(w > 0 for w in widths), widths
    captions = page.eval_on_selector_all("figcaption", "cs => cs.map(c => c.innerText)")
    assert len(captions) == len(widths) and all(len(c.split()) > 5 for c in captions), captions
    page.close()
