"""The demo in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by `.ci/run`) driven by Selenium against the demo served on
loopback by this process. Skipped, with the reason, only where the browser or the demo
extra is missing.

Checks: a run shows live progress, the best image, the gallery with captions in full
(score, NFE, seed; best first), the score plot and the downloads, and the JSON download
holds the run; the prompt row stays at the top when the page scrolls; on a phone
(400x850) the status, its progress and the best image are in view after Generate without
scrolling, nothing scrolls sideways, and reflection rounds (critique, prompt, why it
stayed) read as text; an RGBA run shows the cut-out, its matte and three image downloads;
the searcher's own widgets appear when it is picked and their values reach it; an example
prompt is one click away; bad input shows its message; a second session waits in the
queue saying so and where, then each gets its own result. Saves the screenshots in docs/
(demo.png, the README's, and demo-phone.png) when TTS_SAVE_SCREENSHOTS=1, else in a temporary
folder, so that a test run leaves the checkout as it was."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else \
    shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)",
                allow_module_level=True)
pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[demo]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from demo_helpers import PROBE, default_tts, probe_registered  # noqa: E402
from tts_diffusion.demo import DemoLimits, build_demo, serve  # noqa: E402

DOCS = (Path(__file__).resolve().parent.parent / "docs" if os.environ.get("TTS_SAVE_SCREENSHOTS") == "1"
        else Path(tempfile.mkdtemp(prefix="tts-demo-shots-")))
SCREENSHOT, PHONE_SCREENSHOT = DOCS / "demo.png", DOCS / "demo-phone.png"
PHONE = (400, 850)
RUN_TIMEOUT = 240  # seconds for one small search on a busy 2-core CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with probe_registered():
        demo = build_demo(default_tts(), DemoLimits(max_budget=400, max_queue=8, concurrency=1),
                          files_root=str(tmp_path_factory.mktemp("runs")))
        port = _free_port()
        serve(demo, host="127.0.0.1", port=port, block=False, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


def _driver(width=1400, height=1000):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--window-size={max(width, 500)},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if width < 500:  # headless Chromium's windows are at least 500 px wide: emulate a phone's screen
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    return d


@pytest.fixture
def browser(server):
    drivers = []

    def make(size=(1400, 1000)):
        d = _driver(*size)
        drivers.append(d)
        d.get(server)
        WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
        return d

    yield make
    for d in drivers:
        d.quit()


# ------------------------------------------------------------------ page helpers
def css(d, sel):
    return d.find_element(By.CSS_SELECTOR, sel)


def type_into(box, text):
    box.send_keys(Keys.CONTROL, "a")  # the modifier is released at the end of each send_keys
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)
    box.send_keys(Keys.TAB)  # blur: gradio commits the value


def set_text(d, sel, text):
    type_into(css(d, f"{sel} textarea, {sel} input"), text)


def set_number(d, sel, value):
    """Type a number and wait until the page holds it (an event may still be updating it)."""
    def holds(d):
        if css(d, f"{sel} input").get_attribute("value") != value:
            set_text(d, sel, value)
            return False
        return True

    WebDriverWait(d, 20, poll_frequency=0.5).until(holds)


def choose(d, sel, option):
    """Pick `option` in a gradio dropdown."""
    css(d, f"{sel} input").click()
    WebDriverWait(d, 10).until(lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                                          if o.text.strip().endswith(option)])
    for o in d.find_elements(By.CSS_SELECTOR, "[role=option]"):
        if o.text.strip().splitlines()[-1] == option:
            o.click()
            break
    WebDriverWait(d, 10).until(lambda d: css(d, f"{sel} input").get_attribute("value") == option)


def status(d):
    return css(d, "#status").text


def wait_done(d, timeout=RUN_TIMEOUT, seen=None):
    def done(d):
        s = status(d)
        if seen is not None:
            seen.append(s)
        return s.startswith("Done") or "Error" in s

    WebDriverWait(d, timeout, poll_frequency=0.2).until(done)
    return status(d)


def downloads(d):
    links = d.find_elements(By.CSS_SELECTOR, "#downloads a[download]")
    return {a.get_attribute("download"): a.get_attribute("href") for a in links}


def fetch_json(d):
    href = next(h for n, h in downloads(d).items() if n.endswith(".json"))
    with urllib.request.urlopen(href, timeout=30) as r:
        return json.loads(r.read())


def captions(d):
    labels = d.find_elements(By.CSS_SELECTOR, "#candidates .caption-label")
    return [e.get_attribute("innerText").strip() for e in labels]


def in_view(d, sel):
    """Whether the element is inside the window (left, top, right, bottom), without scrolling."""
    return d.execute_script("""const r = document.querySelector(arguments[0]).getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= window.innerHeight
               && r.right <= window.innerWidth;""", sel)


def scrolls_sideways(d):
    return d.execute_script("return document.documentElement.scrollWidth > document.documentElement.clientWidth")


def prompt_row_stays_on_top(d):
    d.execute_script("window.scrollTo(0, 900)")
    time.sleep(0.3)
    top = d.execute_script("return [window.scrollY, document.querySelector('#prompt-row').getBoundingClientRect().top]")
    d.execute_script("window.scrollTo(0, 0)")
    return top[0] > 0 and abs(top[1]) < 1


def screenshot(d, path, full=False):
    if full:
        height = d.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        d.set_window_size(1400, min(int(height) + 200, 4000))
        time.sleep(1.0)
    path.parent.mkdir(exist_ok=True)
    d.save_screenshot(str(path))
    assert path.stat().st_size > 20_000


# ------------------------------------------------------------------ tests
def test_a_run_shows_progress_image_gallery_plot_and_downloads(browser):
    d = browser()
    prompt = "a photo of a red circle left of a blue square"
    set_text(d, "#prompt", prompt)
    choose(d, "#searcher", "zero_order")
    set_number(d, "#budget", "180")
    css(d, "#generate").click()
    seen: list[str] = []
    final = wait_done(d, seen=seen)
    assert final.startswith("Done: best score"), final
    assert any("/ 180 NFE" in s and s.startswith("Running") for s in seen), seen  # live progress in NFE

    img = css(d, "#best-image img")
    assert d.execute_script("return arguments[0].naturalWidth", img) == 512  # 64 px scaled up 8x
    caps = captions(d)
    assert len(caps) == 9 and caps[0].splitlines()[0].endswith("· best")  # 1 pivot + 2 iterations of 4 neighbours
    assert all(len(c.splitlines()) == 2 and c.splitlines()[1].split(" · ")[0].endswith(" NFE") for c in caps)
    cut = d.execute_script("""return [...document.querySelectorAll('#candidates .caption-label')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1).length""")
    assert cut == 0  # every caption shows in full
    scores = [float(c.split("score ")[1].split(" ")[0].split("\n")[0]) for c in caps]
    assert scores == sorted(scores, reverse=True)
    plot = css(d, "#trace-plot img")
    assert d.execute_script("return arguments[0].naturalWidth", plot) > 300

    files = downloads(d)
    assert sorted(n.rsplit(".", 1)[1] for n in files) == ["json", "png"]
    run = fetch_json(d)
    assert run["prompt"] == prompt and run["settings"]["searcher"] == "zero_order"
    assert run["nfe"] == 180 and len(run["candidates"]) == 9
    assert max(scores) == pytest.approx(run["best"]["score"], abs=5e-4)
    seeds = {str(c["seed"]) for c in run["candidates"] if c.get("seed") is not None}
    assert seeds and all(c.split("seed ")[1] in seeds for c in caps if "seed " in c)  # seeds in full
    assert f"seed {run['settings']['seed']}" in final
    assert prompt_row_stays_on_top(d) and not scrolls_sideways(d)
    screenshot(d, SCREENSHOT, full=True)  # the README's: the whole page


def test_on_a_phone_the_run_is_in_view_and_reflection_rounds_read_as_text(browser):
    d = browser(PHONE)
    set_text(d, "#prompt", "four purple stars")
    choose(d, "#searcher", "reflect")
    set_number(d, "#budget", "80")
    d.execute_script("window.scrollTo(0, 0)")
    css(d, "#generate").click()
    WebDriverWait(d, RUN_TIMEOUT, poll_frequency=0.2).until(lambda d: status(d).startswith(("Running", "Done")))
    assert in_view(d, "#status") and in_view(d, "#best-image"), "status / best image out of view after Generate"
    final = wait_done(d)
    assert final.startswith("Done"), final
    assert in_view(d, "#status") and in_view(d, "#best-image img") and not scrolls_sideways(d)
    screenshot(d, PHONE_SCREENSHOT)
    assert prompt_row_stays_on_top(d)
    rounds = css(d, "#chains-table")
    text = rounds.get_attribute("innerText")
    assert "critique: expected 4 purple stars, found" in text
    assert "(unchanged: the shapes grammar has one phrasing for a counting prompt)" in text
    # readable: lines as wide as the screen allows, not a word per line
    lines = d.execute_script("""const e = document.querySelector('#chains-table li li');
        const h = parseFloat(getComputedStyle(e).lineHeight) || 20; return [e.getBoundingClientRect().width,
        e.getBoundingClientRect().height / h];""")
    assert lines[0] > 250 and lines[1] < 6, lines


def test_rgba_shows_the_cutout_its_matte_and_three_image_downloads(browser):
    d = browser()
    set_text(d, "#prompt", "a photo of a red circle")
    set_number(d, "#budget", "40")
    css(d, "#advanced button").click()
    WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#toggle-rgba input"))
    css(d, "#toggle-rgba input").click()
    css(d, "#generate").click()
    assert wait_done(d).startswith("Done")
    assert "cut-out over a checkerboard" in css(d, "#best-image").text
    # the page fills its images after the status line: wait for the matte to load (a busy machine is slow)
    shown = WebDriverWait(d, 60, poll_frequency=0.2).until(lambda d: [
        e for e in d.find_elements(By.CSS_SELECTOR, "#matte img")
        if e.is_displayed() and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", e)])
    assert d.execute_script("return arguments[0].naturalWidth", shown[0]) == 512
    names = sorted(downloads(d))
    assert [n.split(".", 1)[1] for n in names] == ["alpha.png", "json", "png", "rgb.png"]


def test_searcher_widgets_come_from_its_spec_and_reach_it(browser):
    d = browser()
    probe_box = "#searcher-options-" + PROBE

    def shown(d):
        return any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, probe_box))

    css(d, "#advanced button").click()
    assert not shown(d)
    choose(d, "#searcher", PROBE)
    WebDriverWait(d, 10).until(shown)
    widget = {name: css(d, f"#searcher-{PROBE}-{name}")
              for name in ("rounds", "scale", "flip", "mode", "offsets", "extra_prompt", "keep_images")}
    assert all(w.is_displayed() for w in widget.values())
    assert not d.find_elements(By.CSS_SELECTOR, f"#searcher-{PROBE}-label")  # free text, not a prompt: not shown
    assert widget["flip"].find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert widget["mode"].find_elements(By.CSS_SELECTOR, "input[role=combobox]")
    scale = widget["scale"].find_element(By.CSS_SELECTOR, "input[type=number]")
    assert (scale.get_attribute("min"), scale.get_attribute("max")) == ("0", "2")
    type_into(scale, "1.5")
    type_into(widget["offsets"].find_element(By.CSS_SELECTOR, "textarea, input"), "4,5")
    WebDriverWait(d, 10).until(lambda d: scale.get_attribute("value") == "1.5")
    set_text(d, "#prompt", "a photo of a green triangle")
    set_number(d, "#budget", "60")
    css(d, "#generate").click()
    assert wait_done(d).startswith("Done")
    run = fetch_json(d)
    assert run["settings"]["searcher"] == PROBE and run["settings"]["rounds"] == 3
    assert run["settings"]["scale"] == 1.5 and run["settings"]["offsets"] == [4, 5]
    assert run["settings"]["flip"] is False  # unchanged values: the declared defaults, recorded by name
    assert len(run["trace"]) == 3
    choose(d, "#searcher", "best_of_n")
    WebDriverWait(d, 10).until(lambda d: not shown(d))


def test_example_prompt_is_one_click_away_and_bad_input_shows_its_message(browser):
    d = browser()
    example = [e for e in d.find_elements(By.CSS_SELECTOR, "button") if e.text.startswith("a photo of")]
    assert example
    text = example[0].text
    example[0].click()
    WebDriverWait(d, 10).until(lambda d: css(d, "#prompt textarea").get_attribute("value") == text)

    set_text(d, "#prompt", "")
    css(d, "#generate").click()
    WebDriverWait(d, 30).until(lambda d: "Error" in status(d))
    assert "the prompt is empty" in status(d)

    set_text(d, "#prompt", "a photo of a cat")
    css(d, "#generate").click()
    WebDriverWait(d, 60).until(lambda d: "cat" in status(d))
    assert "outside the shapes grammar" in status(d)

    set_text(d, "#prompt", "a photo of a circle")
    set_text(d, "#budget", "1000")
    css(d, "#generate").click()
    WebDriverWait(d, 30).until(lambda d: "limit" in status(d))
    assert "over this server's limit of 400 NFE" in status(d)


def test_a_second_session_waits_saying_where_then_each_gets_its_own_result(browser):
    jobs = {"a photo of two blue squares": ("11", "120"), "a photo of a yellow star": ("22", "40")}
    drivers = {}
    for prompt, (seed, budget) in jobs.items():
        d = browser()
        set_text(d, "#prompt", prompt)
        set_number(d, "#seed", seed)
        set_number(d, "#budget", budget)
        drivers[prompt] = d
    first, second = drivers.values()
    css(first, "#generate").click()
    WebDriverWait(first, 60, poll_frequency=0.1).until(lambda d: status(d).startswith("Running"))
    css(second, "#generate").click()
    seen: list[str] = []
    results = {}
    thread = threading.Thread(target=lambda: results.__setitem__("a photo of two blue squares", wait_done(first)))
    thread.start()
    results["a photo of a yellow star"] = wait_done(second, seen=seen)
    thread.join(RUN_TIMEOUT + 30)
    waiting = [s for s in seen if "Waiting in the queue" in s]
    assert waiting and "place 1" in waiting[0] and "1 running" in waiting[0], seen[:5]
    for prompt, (seed, budget) in jobs.items():
        assert results[prompt].startswith("Done"), results[prompt]
        run = fetch_json(drivers[prompt])
        assert run["prompt"] == prompt and run["settings"]["seed"] == int(seed) and run["nfe"] == int(budget)
        assert f"seed {seed}" in results[prompt]
