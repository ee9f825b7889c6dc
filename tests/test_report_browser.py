"""The HTML report in a real browser: headless Chromium opens the file a small build wrote, offline.

Chromium is Debian's package driven by Python playwright (playwright cannot download its own browser
here). Missing either is a failure with the install line, not a skip: CI installs both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ieiw_testing import run_ieiw, write_config

INSTALL = "install it: `apt-get update && apt-get install -y chromium` and `pip install playwright`"


def chromium_path() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not found:
        pytest.fail(f"Chromium is missing, so the HTML report cannot be checked in a browser; {INSTALL}")
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_root) -> Path:
    """One small embedded build (30 scenes, units of 16) shared by the tests here; the flow writes the report."""
    folder = tmp_path_factory.mktemp("report")
    config = write_config(folder / "build.yaml", sample_root, folder / "out", unit_size=16)
    run_ieiw("build", config)
    return folder / "out"


def test_report_opens_offline_in_chromium(built: Path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is missing; {INSTALL}")
    report = built / "report.html"
    assert report.is_file(), "the build flow did not write report.html"
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images, i => [i.alt, i.naturalWidth])")
            galleries = page.evaluate("""Array.from(document.querySelectorAll('.gallery'), g => [
                g.dataset.kind, g.dataset.task, Number(g.dataset.count), g.querySelectorAll('.pair').length,
                g.querySelector('.count').innerText])""")
            banner = page.locator("#embedded-warning")
            assert banner.is_visible() and "opencv-telea" in banner.inner_text()
            assert page.locator("svg.hist").count() > 0
            page.screenshot(path=str(built / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, f"console errors: {errors}"
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == [], "the report fetched from the network"
    assert images and all(alt.strip() for alt, _ in images), "an <img> has no alt text"
    assert all(width > 0 for _, width in images), f"{sum(w == 0 for _, w in images)} images did not decode"
    kept = [g for g in galleries if g[0] == "kept"]
    assert {g[1] for g in kept} == {"add", "remove"} and all(g[2] > 0 for g in kept)
    assert any(g[0] == "near-threshold" for g in galleries)
    for kind, task, count, shown, text in galleries:
        assert shown == count, f"{kind} gallery of {task}: data-count {count} but {shown} pairs"
        assert text.startswith(f"{count} pair"), text
    assert (built / "report.png").stat().st_size > 10_000


def test_report_command_takedown_and_errors(built: Path, tmp_path: Path):
    from ieiw.report import write_report

    proc = run_ieiw("report", built / "ieiw", "--out", tmp_path / "r.html", "--per-task", "2")
    html = (tmp_path / "r.html").read_text()
    assert "wrote" in proc.stdout and html.count("data-kind='kept'") == 2
    assert html.count("class='pair'") >= 4 and "https://" not in html.split("<body>")[0]
    shown = html.split("data-kind='kept'")[1].split("data-id='")[1].split("'")[0]
    again = write_report(built, tmp_path / "again.html", gallery_per_task=2)
    assert again.read_text() == html  # seeded: the same pairs every time
    hidden = write_report(built, tmp_path / "t.html", gallery_per_task=2, takedown={shown}).read_text()
    assert shown not in hidden and hidden.count("data-kind='kept'") == 2
    missing = run_ieiw("report", tmp_path, check=False)
    assert missing.returncode == 2 and "no ieiw/manifest.json" in missing.stderr


def test_kept_side_is_columnar_and_galleries_sample_only_kept_rows(built: Path):
    """LightRows: every kept row once, with the shard and index its images are at; a gallery of a task
    that kept nothing is empty, not an error; a gallery shows rows of its own task only."""
    import pyarrow.parquet as pq

    from ieiw.schemas.takedown import Takedown
    from ieiw.report import LightRows, _kept_gallery

    kept = LightRows.read(built / "ieiw")
    ids = [i for shard in sorted((built / "ieiw").glob("*.parquet")) for i in pq.read_table(shard, columns=["id"])["id"].to_pylist()]
    assert sorted(kept.table["id"].to_pylist()) == sorted(ids) and len(kept) == len(ids)
    first = kept.rows(kept.table.slice(0, 1).to_pylist())[0]
    assert pq.read_table(first.shard, columns=["id"])["id"][first.index].as_py() == first.data["id"]
    assert "params" not in first.data["builder"]  # the page never shows it

    nothing = _kept_gallery("no-such-task", kept, 12, 0, Takedown(frozenset()))
    assert "data-count='0'" in nothing and "0 kept" in nothing
    task = sorted(kept.tasks())[0]
    page = _kept_gallery(task, kept, 3, 0, Takedown(frozenset()))
    shown = [part.split("'")[0] for part in page.split("data-id='")[1:]]
    of_task = set(kept.of_task(task)["id"].to_pylist())
    assert len(shown) == 3 and set(shown) <= of_task
