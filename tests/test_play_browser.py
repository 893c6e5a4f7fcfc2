"""The play page in a real headless Chromium: type a caption, send it, see the next garment.

Uses Debian's ``chromium`` package through Playwright (never ``playwright install``: nothing
is downloaded). Skipped, with the reason, where Chromium or Playwright is missing; CI installs
Chromium best-effort (see ``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

expect = None  # playwright.sync_api.expect, set once Playwright is imported

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium) at /usr/bin/chromium",
    ),
]


@pytest.fixture(scope="module")
def page_url(small_agent_checkpoint):
    from fiq_gym.play.agent import load_play_agent
    from fiq_gym.play.server import PlayServer

    with PlayServer(load_play_agent(small_agent_checkpoint), port=0, seed=0) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the Python package playwright is not installed (pip install -e '.[test]')",
    )
    global expect
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Console errors for answers with a 4xx status are expected (the test sends bad input).
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
        ),
    )
    yield page
    context.close()
    assert not errors, f"the page reported errors: {errors}"


def _eventually(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.05)


def test_type_a_caption_send_it_and_see_the_next_garment_and_rank(page, page_url):
    page.goto(page_url)
    expect(page.locator("#turn")).to_have_text("0")
    assert re.fullmatch(r"#s=[A-Za-z0-9_-]+", page.evaluate("location.hash"))
    first_src = page.get_attribute("#shown-img", "src")
    assert page.get_attribute("#target-img", "src").endswith(".png")
    _eventually(lambda: page.evaluate("document.getElementById('target-img').naturalWidth") == 192)

    page.fill("#caption", "is darker and has longer sleeves")
    page.click("#send")
    expect(page.locator("#turn")).to_have_text("1")
    assert page.get_attribute("#shown-img", "src") != first_src
    assert re.fullmatch(r"\d+", page.text_content("#rank"))
    assert page.text_content("#rank-max") == "299"
    items = page.query_selector_all("#history li")
    assert len(items) == 2 and "is darker and has longer sleeves" in items[0].text_content()
    assert page.input_value("#caption") == ""

    # Everything the person types is shown as text, never run or rendered as HTML.
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> is <b>red</b>'
    page.fill("#caption", evil)
    page.click("#send")
    expect(page.locator("#turn")).to_have_text("2")
    first = page.query_selector("#history li")
    assert evil in first.text_content() or evil in page.text_content("#history")
    assert (
        page.evaluate("document.querySelectorAll('#history script, #history b, #history img[src=x]').length")
        == 0
    )
    assert page.evaluate("window.pwned") is None

    # A reload resumes the session; "New dialog" starts over.
    page.reload()
    expect(page.locator("#turn")).to_have_text("2")
    assert len(page.query_selector_all("#history li")) == 3
    page.fill("#target-input", "syn-0000042")
    page.click("#reset")
    expect(page.locator("#turn")).to_have_text("0")
    assert page.text_content("#target-id") == "syn-0000042"

    # Errors from the server are shown, not swallowed.
    page.fill("#caption", "   ")
    page.click("#send")
    expect(page.locator("#error")).to_contain_text("empty")


def test_watch_mode_plays_turn_by_turn(page, page_url):
    page.goto(page_url)
    expect(page.locator("#turn")).to_have_text("0")
    page.check("input[name=mode][value=watch]")
    page.click("#reset")
    page.wait_for_selector("#advance:not([hidden])")
    assert page.is_hidden("#feedback-form")
    page.click("#advance")
    expect(page.locator("#turn")).to_have_text("1")
    assert "shopper:" in page.text_content("#history")
