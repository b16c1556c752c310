"""The console's key, credential, request, audit, run and playground pages in a real
browser (chromium inside offline-run, the fixtures of ``test_console_browser.py``):
add a provider key and test it, create and revoke an API key, stream a playground
reply and open its run's timeline; screenshots at desktop and phone width."""

from __future__ import annotations

from typing import Any

import pytest
from tests.e2e.test_console_browser import (  # noqa: F401 - the fixtures are used by name
    DESKTOP,
    PHONE,
    Console,
    _close,
    _page,
    _shot,
    browser,
    console,
    pytestmark,
)
from tests.support.upstreams import UPSTREAM_KEYS

from warden.testing.upstream import Behaviour

playwright_api = pytest.importorskip("playwright.async_api")


async def test_add_and_test_a_credential(browser: Any, console: Console) -> None:  # noqa: F811
    secret = UPSTREAM_KEYS["openai"]
    page = await _page(browser, console)
    await page.goto(f"{console.url}/ui/credentials")
    form = page.locator("#add-credential")
    await form.locator("select[name=provider]").select_option("openai-compatible")
    await form.locator("input[name=api_key]").fill(secret)
    await form.locator("input[name=label]").fill("from-browser")
    await form.locator("input[name=base_url]").fill(console.up.base_url)
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector("#added")
    assert "from-browser" in await page.inner_text("#added")
    assert secret not in await page.content()
    row = page.locator("tr", has_text="from-browser")
    await row.locator("button", has_text="Test").click()  # htmx: the result replaces its slot
    result = row.locator(".test-result")
    await result.wait_for()
    assert await result.get_attribute("data-status") == "ok" and "Works" in await result.inner_text()
    await page.reload()  # a GET after the redirect: nothing is sent again
    assert "already exists" not in await page.content()
    assert secret not in await page.content()
    await _shot(page, "credentials-desktop")
    await page.set_viewport_size(PHONE)
    await _shot(page, "credentials-phone")
    await _close(page)


async def test_create_a_key_shown_once_then_revoke_it(browser: Any, console: Console) -> None:  # noqa: F811
    page = await _page(browser, console)
    await page.goto(f"{console.url}/ui/keys")
    await page.fill("#create-key input[name=name]", "browser-made")
    await page.click("#create-key button[type=submit]")
    shown = (await page.inner_text("#new-key")).strip()
    assert shown.startswith("wk-")
    await _shot(page, "keys-desktop")
    await page.goto(f"{console.url}/ui/keys")
    assert shown not in await page.content()
    row = page.locator("tr", has_text="browser-made")
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_url("**/ui/keys")
    assert "revoked" in await page.locator("tr", has_text="browser-made").inner_text()
    await _close(page)


async def test_the_playground_streams_a_reply_and_links_its_run(browser: Any, console: Console) -> None:  # noqa: F811
    console.up.enqueue(Behaviour(text="streamed to the browser"))
    page = await _page(browser, console)
    await page.goto(f"{console.url}/ui/playground")
    await page.select_option("#playground select[name=agent]", console.agent["id"])
    await page.fill("#playground textarea[name=message]", "say something")
    await page.click("#playground button[type=submit]")
    await page.wait_for_selector('#reply[data-done="true"]')
    assert await page.get_attribute("#reply", "data-status") == "completed"
    assert "streamed to the browser" in await page.inner_text("#reply")
    await _shot(page, "playground-desktop")
    await page.click("#reply-meta a")
    await page.wait_for_selector("#timeline")
    assert "completed" in await page.inner_text("#run-status")
    await _shot(page, "run-desktop")
    await page.set_viewport_size(PHONE)
    await _shot(page, "run-phone")
    await _close(page)


@pytest.mark.parametrize("path", ["requests", "audit", "limits", "policy", "runs"])
async def test_the_log_and_settings_pages_render_at_both_widths(browser: Any, console: Console,  # noqa: F811
                                                                path: str) -> None:
    page = await _page(browser, console)
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.goto(f"{console.url}/ui/{path}")
        assert await page.locator("h1").count() == 1
        await _shot(page, f"{path}-{name}")
    if path == "audit":
        await page.set_viewport_size(DESKTOP)
        await page.click("#verify")
        await page.wait_for_selector('#verify-result[data-ok="true"]')
    if path == "requests":
        assert await page.locator("tr[data-request]").count() >= 3  # the fixture's chat requests
    await _close(page)
