"""The run report in a real headless Chromium (Debian's `chromium`): it loads, shows one row per
cluster, decodes every picture and logs no error; and the error capture itself works.

Without Chromium these tests skip, unless INTEGRATION_REQUIRED=1 (CI), where they fail.
"""

import pytest

import browser
from decflow.insight import report
from test_report import K, report_runs  # noqa: F401  (the store, built once per session)

pytestmark = pytest.mark.slow  # a headless browser and an MLflow store


@pytest.fixture(scope="module", autouse=True)
def chromium():
    return browser.require_chromium()


def test_report_in_a_browser(report_runs, tmp_path):  # noqa: F811
    page = tmp_path / "report.html"
    page.write_text(report.render_report(report_runs.uri, report_runs.full), encoding="utf-8")
    shot = tmp_path / "report.png"

    view = browser.open_page(page, screenshot=shot)

    assert view.console_errors == [] and view.page_errors == []
    assert view.title.startswith("decflow recluster 2026-03-01")
    assert view.n_cluster_rows == K
    assert len(view.images) == 2
    assert all(src.startswith("data:image/png;base64,") and width > 0
               for src, width in view.images), view.images
    assert view.requests == []  # nothing fetched: the page is self-contained
    assert "Drift alert (1):" in view.text and '<script>alert("x")</script>' in view.text
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_capture_sees_console_errors_exceptions_and_broken_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                    '<table><tr class="cluster-row"><td>0</td></tr></table>'
                    '<img src="missing.png" alt="gone">'
                    '<script>console.error("deliberate", 42); throw new Error("kaput");</script>'
                    '</body></html>', encoding="utf-8")

    view = browser.open_page(page)

    assert view.title == "bad" and view.n_cluster_rows == 1
    assert "deliberate 42" in view.console_errors
    assert any("ERR_FILE_NOT_FOUND" in e and e.endswith("missing.png)")
               for e in view.console_errors), view.console_errors
    assert len(view.page_errors) == 1 and "Error: kaput" in view.page_errors[0]
    assert view.images == [("missing.png", 0)]
    assert view.requests == [(tmp_path / "missing.png").as_uri()]


def test_screenshot_from_the_command_line(tmp_path):
    import subprocess
    import sys

    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><title>p</title><body style='margin:0'>"
                    "<div style='height:3000px'>tall</div>",
                    encoding="utf-8")
    out = tmp_path / "docs" / "p.png"
    done = subprocess.run([sys.executable, browser.__file__, str(page), str(out), "640"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    png = out.read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (640, 3000)  # the whole page, not the viewport
