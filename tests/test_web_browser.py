"""The web app in a real browser: Debian's Chromium driven by Playwright against the app served by waitress on
127.0.0.1 (a free port), the job worker analysing for real.

One flow, set up once for the module: log in through the form; queue the bundled samples and let the worker
analyse them; upload the GE DICOM series (.zip) through the upload page (the page's own script posts it and
goes to the study's page, which reloads itself until the analysis is done). Then: the viewer scrolls with the
mouse wheel and the arrow keys (slice number, ``data-index`` and the slice image follow), an overlay checkbox
hides and shows its overlay, the heat map toggle is offered unchecked, the window select changes the image; the
worklist lists flagged studies first and each group in arrival order; logging out locks the pages again. No page logs a console error or throws (a
Content-Security-Policy violation or a missing image would). Screenshots for the README are written to
docs/screenshots/ (worklist.png, viewer.png, upload.png).

Skipped without /usr/bin/chromium. The bundled models are used when they load and analyse a slice; else an
untrained classifier (the flow, not the findings, is under test) and the screenshots go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (the 'test' extra)")

from sqlalchemy import func, select  # noqa: E402

from conftest import save_untrained_classifier  # noqa: E402
from strokescan.app.web.commands import ensure_admin, seed_samples  # noqa: E402
from strokescan.app.web.db import Study, StudyStatus  # noqa: E402
from strokescan.app.web.server import WebSettings, create_app  # noqa: E402
from strokescan.config import SAMPLES_DIR  # noqa: E402
from strokescan.inference import Predictor  # noqa: E402
from strokescan.io import load_scan  # noqa: E402

expect = sync_api.expect
PASSWORD = "browser-test-password"
GE_ZIP = SAMPLES_DIR / "ge-hispeed-head-series.zip"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync"]
ANALYSIS_TIMEOUT_S = 240  # the worker shares two cores with the browser (and, here, other jobs)


def _predictor(folder: Path) -> tuple[Predictor, str]:
    """The bundled models when they load and analyse one slice, else an untrained 224-px classifier."""
    try:
        predictor = Predictor(segment=True)
        predictor.analyse(load_scan(SAMPLES_DIR / "phe-sich_0021_13.png"))
        return predictor, "bundled"
    except Exception:  # noqa: BLE001 - a model being replaced must not stop the browser test
        return Predictor(save_untrained_classifier(folder, size=224), segment=True), "untrained"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app under waitress on 127.0.0.1; yields (app, base URL, which models, a scratch folder)."""
    from waitress import create_server, wasyncore

    tmp = tmp_path_factory.mktemp("web_browser")
    predictor, models = _predictor(tmp / "model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STROKESCAN_ADMIN_PASSWORD", PASSWORD)
        app = create_app(WebSettings(instance_dir=tmp / "instance", show_identifiers=False,
                                     predictor_factory=lambda: predictor, start_worker=True))
        ensure_admin(app)
    web = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=web.run, name="waitress", daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{web.effective_port}", models, tmp / "screenshots"
    # the request threads first (one finishing a response pulls the trigger), then the sockets, closed from
    # inside the server's loop (a close from here races its select(): EBADF)
    web.task_dispatcher.shutdown(timeout=5)
    web.trigger.pull_trigger(lambda: wasyncore.close_all(web._map, ignore_all=True))
    thread.join(10)
    assert not thread.is_alive(), "waitress did not stop"
    worker = app.extensions["strokescan"]["worker"]
    worker.stop()
    worker.join(120)
    app.extensions["strokescan"]["engine"].dispose()


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


class Tab:
    """A page in its own browser context (own cookies) that records console errors and uncaught exceptions."""

    def __init__(self, browser, base: str, models: str = "bundled", scratch: Path | None = None) -> None:
        self.models, self.scratch = models, scratch
        self.context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 860})
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.on("pageerror", lambda e: self.errors.append(f"{self.page.url}: uncaught {e}"))

    @staticmethod
    def _favicon(url: str | None) -> bool:
        # a browser may still ask for /favicon.ico although the pages name an inline icon
        return bool(url) and url.split("?")[0].endswith("/favicon.ico")

    def _console(self, message) -> None:
        if message.type == "error" and not self._favicon(message.location.get("url")):
            self.errors.append(f"{self.page.url}: {message.text} ({message.location.get('url')})")

    def _response(self, response) -> None:
        if response.status >= 400 and not self._favicon(response.url):
            self.errors.append(f"{self.page.url}: HTTP {response.status} for {response.url}")

    def login(self) -> None:
        page = self.page
        page.goto("/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("form.login button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))
        expect(page.locator("#worklist")).to_be_visible()

    def assert_no_errors(self) -> None:
        assert self.errors == [], "console errors or uncaught exceptions:\n" + "\n".join(self.errors)


def _wait_for_queue(app, timeout: float = ANALYSIS_TIMEOUT_S) -> None:
    """Until no study is queued or running (the database says so: no race with the worker's idle flag)."""
    sessions = app.extensions["strokescan"]["sessions"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            busy = session.scalar(select(func.count()).select_from(Study)
                                  .where(Study.status.in_([StudyStatus.QUEUED, StudyStatus.RUNNING])))
        if not busy:
            return
        time.sleep(0.5)
    pytest.fail(f"the job worker did not finish the queue in {timeout} s")


def _screenshot(tab: Tab, name: str) -> Path:
    """A full-page screenshot, into docs/screenshots/ (the README's pictures) when ``STROKESCAN_SCREENSHOTS=1``
    and the bundled models ran, else into the test's temporary folder (the tests never change tracked files)."""
    wanted = os.environ.get("STROKESCAN_SCREENSHOTS") == "1" and tab.models == "bundled"
    folder = SCREENSHOTS if wanted else tab.scratch
    folder.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(folder / name), full_page=True)
    return folder / name


def _images_loaded(page, selector: str) -> None:
    page.wait_for_function("""(sel) => Array.from(document.querySelectorAll(sel))
        .every((img) => img.complete && (img.naturalWidth > 0 || img.classList.contains('hidden')))""", arg=selector)


@pytest.fixture(scope="module")
def reader(server, browser):
    """A logged-in tab after the samples were analysed and the GE series was uploaded through the page and
    analysed; yields (tab, study id)."""
    app, base, models, scratch = server
    tab = Tab(browser, base, models, scratch)
    tab.login()
    assert seed_samples(app) == 5
    _wait_for_queue(app)
    page = tab.page
    page.goto("/upload")
    expect(page.locator("#upload-form")).to_be_visible()
    _screenshot(tab, "upload.png")
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    page.set_input_files("#files", str(GE_ZIP))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(re.compile(r"/studies/\d+$"))
    study_id = int(page.url.rsplit("/", 1)[1])
    # the page polls its status and reloads itself (queued -> running -> done): wait for the viewer
    expect(page.locator("#viewer")).to_be_visible(timeout=ANALYSIS_TIMEOUT_S * 1000)
    expect(page.locator("#study-status strong")).to_have_text("done")
    # the analysis of 28 slices outlasts the first view of the page: it was shown unfinished, then reloaded
    assert loads.count(page.url) >= 2, loads
    yield tab, study_id
    tab.context.close()


def _index(page) -> int:
    return int(page.get_attribute("#viewer", "data-index"))


def _expect_slice(page, index: int, window: str | None = None) -> None:
    """The viewer shows slice ``index`` (0-based): data-index, the slice number, the image and overlays' src."""
    expect(page.locator("#viewer")).to_have_attribute("data-index", str(index))
    expect(page.locator("#slice-number")).to_have_text(str(index + 1))
    src = page.get_attribute("#slice", "src")
    assert src.endswith(f"/{index}.png"), src
    if window:
        assert f"/slices/{window}/" in src, src
    for overlay in page.locator("img.overlay").all():
        assert overlay.get_attribute("src").endswith(f"/{index}.png")


def test_viewer_scrolls_toggles_and_windows(reader):
    tab, study_id = reader
    page = tab.page
    viewer = page.locator("#viewer")
    n = int(viewer.get_attribute("data-n"))
    assert n == 28
    start = _index(page)
    assert start == int(viewer.get_attribute("data-start"))
    _images_loaded(page, "#stage img")
    expect(page.locator("img.overlay")).to_have_count(3)
    for overlay in page.locator("img.overlay").all():  # every overlay PNG exists and is shown
        expect(overlay).not_to_have_class(re.compile(r"\bhidden\b"))
    # the detector's heat map (the study has explanations): offered, but off until asked for
    expect(page.locator("label:has(#heatmap-toggle)")).to_have_text("where the detector looked (not a lesion outline)")
    expect(page.locator("#heatmap-toggle")).not_to_be_checked()
    expect(page.locator("#heatmap")).to_have_class(re.compile(r"\bhidden\b"))
    _screenshot(tab, "viewer.png")

    # the mouse wheel over the image: one slice per notch, down = next
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    first = 0 if start == n - 1 else start  # room to go down
    if first != start:
        page.keyboard.press("Home")
        _expect_slice(page, 0)
    src_before = page.get_attribute("#slice", "src")
    page.mouse.wheel(0, 120)
    _expect_slice(page, first + 1)
    assert page.get_attribute("#slice", "src") != src_before
    page.mouse.wheel(0, 120)
    _expect_slice(page, first + 2)
    page.mouse.wheel(0, -120)
    _expect_slice(page, first + 1)

    # the arrow keys
    page.keyboard.press("ArrowUp")
    _expect_slice(page, first)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    _expect_slice(page, first + 2)
    page.keyboard.press("End")
    _expect_slice(page, n - 1)
    page.keyboard.press("ArrowDown")  # no further than the last slice
    _expect_slice(page, n - 1)
    page.keyboard.press("Home")
    page.keyboard.press("ArrowUp")  # nor before the first
    _expect_slice(page, 0)
    _images_loaded(page, "#stage img")

    # an overlay checkbox hides and shows its class's overlay only
    box_, overlay = page.locator("input.toggle[value=hemorrhage]"), page.locator("img.overlay[data-class=hemorrhage]")
    box_.uncheck()
    expect(overlay).to_have_class(re.compile(r"\bhidden\b"))
    expect(page.locator("img.overlay[data-class=edema]")).not_to_have_class(re.compile(r"\bhidden\b"))
    box_.check()
    expect(overlay).not_to_have_class(re.compile(r"\bhidden\b"))

    # the window presets of a HU series; the image follows the select
    options = page.locator("#window option").all_inner_texts()
    assert options == ["brain", "subdural", "stroke", "bone"]
    assert "/slices/brain/" in page.get_attribute("#slice", "src")
    page.select_option("#window", "bone")
    page.wait_for_function("document.getElementById('slice').src.includes('/slices/bone/')")
    _expect_slice(page, 0, "bone")
    _images_loaded(page, "#slice")

    # a click on the probability strip goes to that slice
    page.locator("#strip rect.bar").nth(5).dispatch_event("click")
    _expect_slice(page, 5, "bone")
    _images_loaded(page, "#stage img")
    tab.assert_no_errors()


def test_arrow_keys_leave_focused_controls_alone(reader):
    tab, _study_id = reader
    page = tab.page
    page.keyboard.press("Home")
    _expect_slice(page, 0)
    page.focus("#opacity")
    before = page.input_value("#opacity")
    page.keyboard.press("ArrowRight")
    assert (page.input_value("#opacity"), _index(page)) == (str(int(before) + 1), 0)


def test_worklist_flagged_first_then_arrival_order(reader):
    tab, study_id = reader
    page = tab.page
    page.goto("/")
    rows = page.locator("#worklist tbody tr[data-study]")
    expect(rows).to_have_count(6)
    seen = []
    for row in rows.all():
        cells = row.locator("td").all_inner_texts()
        flagged = "flagged" in (row.get_attribute("class") or "").split()
        arrived = cells[2].strip()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", arrived), arrived
        assert cells[3].strip() == "done", cells
        assert ("HEMORRHAGE?" in cells[0]) == flagged, cells
        seen.append((flagged, arrived, int(row.get_attribute("data-study"))))
    flags = [f for f, _, _ in seen]
    assert flags == sorted(flags, reverse=True), f"a flagged study after an unflagged one: {seen}"
    for group in (True, False):
        times = [t for f, t, _ in seen if f is group]
        assert times == sorted(times), f"arrival order broken among {'flagged' if group else 'other'} studies: {seen}"
    assert study_id in {i for _, _, i in seen}
    _screenshot(tab, "worklist.png")
    tab.assert_no_errors()


def test_end_scrolls_the_slices_not_the_page_and_the_ich_form_keeps_its_inputs(reader):
    tab, study_id = reader
    page = tab.page
    page.goto(f"/studies/{study_id}")
    expect(page.locator("#viewer")).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("End")
    _expect_slice(page, int(page.get_attribute("#viewer", "data-n")) - 1)
    assert page.evaluate("window.scrollY") == 0
    page.fill("#ich-score input[name=gcs]", "7")
    page.fill("#ich-score input[name=age]", "82")
    page.select_option("#ich-score select[name=ivh]", "yes")
    page.click("#ich-score button[type=submit]")
    expect(page.locator("#ich-total")).to_be_visible()
    assert page.input_value("#ich-score input[name=gcs]") == "7"
    assert page.input_value("#ich-score input[name=age]") == "82"
    assert page.input_value("#ich-score select[name=ivh]") == "yes"
    tab.assert_no_errors()


def test_the_worklist_alerts_a_new_flagged_study_without_a_reload(server, browser):
    app, base, _models, _scratch = server
    tab = Tab(browser, base)
    try:
        tab.login()
        page = tab.page
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))
        expect(page.locator("#new-flagged")).to_be_hidden()
        page.wait_for_timeout(1000)  # the first poll: what is flagged now is no news
        with app.extensions["strokescan"]["sessions"].begin() as session:
            study = Study(label="Live flagged study", kind="image", upload_dir="uploads/none",
                          analyse_path="uploads/none/0001.png", status=StudyStatus.DONE, positive=True,
                          probability=0.97, operating_point="balanced")
            session.add(study)
            session.flush()
            study_id = study.id
        alert = page.locator("#new-flagged")
        expect(alert).to_be_visible(timeout=15_000)
        expect(alert).to_contain_text(f"study {study_id}")
        assert alert.get_attribute("role") == "alert"
        expect(page.locator(f"#worklist tbody tr[data-study='{study_id}']")).to_be_visible(timeout=15_000)
        assert loads == [], loads  # refreshed in place
        tab.assert_no_errors()
    finally:
        tab.context.close()
        with app.extensions["strokescan"]["sessions"].begin() as session:
            session.delete(session.get(Study, study_id))


def test_logout_locks_the_pages(server, browser):
    _app, base, _models, _scratch = server
    tab = Tab(browser, base)
    try:
        tab.login()
        page = tab.page
        page.click("header button:has-text('Log out')")
        page.wait_for_url(re.compile(r"/login$"))
        page.goto("/")
        assert re.search(r"/login\?next=%2F$", page.url), page.url
        expect(page.locator("form.login")).to_be_visible()
        page.goto("/upload")
        assert "/login" in page.url
        tab.assert_no_errors()
    finally:
        tab.context.close()


def test_pages_name_an_icon(server, browser):
    _app, base, _models, _scratch = server
    tab = Tab(browser, base)
    try:
        tab.page.goto("/login")
        named = tab.page.locator("link[rel~=icon]").count() > 0
        assert named or tab.page.request.get("/favicon.ico").ok, "no <link rel=icon> and /favicon.ico is missing"
    finally:
        tab.context.close()
