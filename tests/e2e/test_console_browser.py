"""The console in a real browser: Playwright for Python driving Debian's chromium
(headless, inside ``offline-run``: loopback only, the live Warden's port bridged in)
against a live Warden in front of the loopback provider simulator.

Each test signs in through the form like a person would. Screenshots of every page,
at desktop (1280x800) and phone (390x844) width, land in ``tests/.artifacts/console/``
(the README's come from there).
"""

from __future__ import annotations

import os
import shutil
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.agents import EchoTool, parse_sse
from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.upstreams import UPSTREAM_KEYS, add_credential

from warden.config import load_settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

playwright_api = pytest.importorskip("playwright.async_api")

REPO = Path(__file__).resolve().parents[2]
OFFLINE_RUN = REPO.parent / "shared" / "tools" / "offline-run"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / ".artifacts" / "console"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
MODEL = "gpt-4o-mini"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not OFFLINE_RUN.exists(),
                       reason="offline-run needs root and unshare (CI has both)"),
]


class Console:
    """The live server, its simulator and an admin API client, shared by the module's tests."""

    def __init__(self, live: LiveWarden, up: UpstreamServer, api: httpx.Client, agent: dict[str, Any]) -> None:
        self.live, self.up, self.api, self.agent = live, up, api, agent

    @property
    def url(self) -> str:
        return self.live.url

    def key(self, name: str, role: str) -> dict[str, Any]:
        reply = self.api.post("/api/keys", json={"name": name, "role": role})
        assert reply.status_code == 201, reply.text
        return reply.json()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data = tmp_path_factory.mktemp("console") / "data"
    live = LiveWarden(load_settings(data_dir=data, admin_key=ADMIN_KEY, access_log=False,
                                    request_deadline=20.0, max_retries=1)).start()
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up, \
            httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as api:
        assert live.services is not None
        live.services.tools.register(EchoTool())
        add_credential(api, "openai", up, models=[{"id": MODEL, "input_price": 0.15, "output_price": 0.6}])
        for _ in range(3):  # some spend for the overview's charts and top lists
            reply = api.post("/v1/chat/completions", json={"model": MODEL, "messages": [
                {"role": "user", "content": "hello"}]})
            assert reply.status_code == 200, reply.text
        reply = api.post("/api/agents", json={"name": "mailer", "instructions": "Use tools.", "tools": ["echo"],
                                              "tool_levels": {"echo": 2}})  # student x level 2: ask a human
        assert reply.status_code == 201, reply.text
        yield Console(live, up, api, reply.json())
    live.stop()


@pytest.fixture
async def browser(console: Console, tmp_path: Path) -> AsyncIterator[Any]:
    """Chromium inside offline-run: it can reach the live Warden's port and nothing else."""
    port = console.url.rsplit(":", 1)[1]
    wrapper = tmp_path / "chromium-offline.sh"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec "{OFFLINE_RUN}" --port {port} -- "{CHROMIUM}" "$@"\n')
    wrapper.chmod(0o755)
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


async def _page(browser: Any, console: Console, key: str = ADMIN_KEY, viewport: dict[str, int] = DESKTOP) -> Any:
    """A fresh browser context signed in with ``key`` through the sign-in form."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda m: m.type == "error" and _errors.append(m.text))
    await page.goto(f"{console.url}/ui/")
    assert "/ui/login" in page.url
    await page.fill("input[name=api_key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console.url}/ui/")
    return page


_errors: list[str] = []  # console errors (a CSP refusal shows up here)


async def _close(page: Any) -> None:
    """Close the page's context; no page may have had a script or style refused by the CSP."""
    await page.context.close()
    refused = [e for e in _errors if "Content Security Policy" in e]
    _errors.clear()
    assert not refused, refused


async def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _chat_until_paused(console: Console, message: str) -> str:
    console.up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "mail", "api_token": "tok-123456789"})]),
                       Behaviour(text="all sent"))
    with console.api.stream("POST", "/api/chat/stream", json={"agent_id": console.agent["id"],
                                                              "message": message}) as reply:
        assert reply.status_code == 200
        events = parse_sse(reply.read())
    assert events[-1]["type"] == "run.paused", events
    return events[0]["run_id"]


async def test_sign_in_overview_charts_and_cookie_flags(browser: Any, console: Console) -> None:
    page = await _page(browser, console)
    chart = await page.wait_for_selector("#chart-requests[data-rendered='1']")
    assert await chart.query_selector("canvas") is not None
    assert await page.get_attribute("#chart-requests", "data-points") == "24"
    assert await page.get_attribute("#chart-requests", "data-series") == "2"
    await page.wait_for_selector("#chart-spend[data-rendered='1'] canvas")
    series = await page.evaluate("fetch('/ui/data/requests').then(r => r.json())")
    assert sum(series["series"][0]["values"]) >= 3  # the three requests made above
    spend_today = await page.inner_text("#spend-today")
    assert spend_today.startswith("$") and spend_today != "$0.00"
    assert MODEL in await page.inner_text("main")  # the top models list
    cookie = next(c for c in await page.context.cookies() if c["name"] == "warden_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert "warden_session" not in await page.evaluate("document.cookie")  # HttpOnly: no script sees it
    await _shot(page, "overview-desktop")
    await page.set_viewport_size(PHONE)
    await page.reload()
    await page.wait_for_selector("#chart-requests[data-rendered='1'] canvas")
    await _shot(page, "overview-phone")
    await _close(page)


async def test_a_new_approval_appears_live_and_approving_completes_the_paused_run(browser: Any,
                                                                           console: Console) -> None:
    page = await _page(browser, console)
    await page.goto(f"{console.url}/ui/approvals")
    await page.wait_for_timeout(500)  # the SSE stream is connected
    run_id = await asyncio.to_thread(_chat_until_paused, console, "send the mail")
    card = await page.wait_for_selector("article[data-approval]", timeout=30_000)  # no reload
    text = await card.inner_text()
    assert "mailer" in text and "echo" in text and "student" in text and "level 2" in text
    assert "tok-123456789" not in text and "***" in text  # the secret-looking argument is masked
    await _shot(page, "approvals-desktop")
    await page.set_viewport_size(PHONE)
    await _shot(page, "approvals-phone")
    await page.set_viewport_size(DESKTOP)
    await page.fill("article[data-approval] input[name=note]", "looks right")
    await page.click("article[data-approval] button[value=approve]")
    await page.wait_for_selector("article[data-status='approved']")
    assert "looks right" in await page.inner_text("article[data-status='approved']")
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline and status != "completed":
        status = console.api.get(f"/api/runs/{run_id}").json()["status"]
        await asyncio.sleep(0.2)
    assert status == "completed"
    audit = console.api.get("/api/audit", params={"action": "approval."}).json()["events"]
    assert any(e["data"].get("note") == "looks right" or "approve" in e["action"] for e in audit)
    await _close(page)


async def test_agents_page_and_a_tier_change_with_a_reason(browser: Any, console: Console) -> None:
    page = await _page(browser, console)
    await page.goto(f"{console.url}/ui/agents")
    await _shot(page, "agents-desktop")
    await page.click("text=mailer")
    await page.wait_for_selector("#agent-tier")
    assert "successful runs" in await page.inner_text("main")
    await _shot(page, "agent-desktop")
    await page.set_viewport_size(PHONE)
    await _shot(page, "agent-phone")
    await page.set_viewport_size(DESKTOP)
    await page.select_option("select[name=tier]", "intern")
    await page.fill("input[name=reason]", "reviewed by hand")
    await page.click("text=Change tier >> xpath=ancestor-or-self::button")
    await page.wait_for_selector("#agent-tier:has-text('intern')")
    maturity = console.api.get(f"/api/agents/{console.agent['id']}/maturity").json()
    assert maturity["tier"] == "intern"
    await _close(page)


async def test_csrf_is_refused_without_the_token_and_inline_script_by_the_csp(browser: Any, console: Console) -> None:
    page = await _page(browser, console)
    status = await page.evaluate(
        """fetch('/ui/agents/%s/tier', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
             body: 'tier=autonomous&reason=forged'}).then(r => r.status)""" % console.agent["id"])
    assert status == 403
    assert console.api.get(f"/api/agents/{console.agent['id']}/maturity").json()["tier"] != "autonomous"
    # The CSP holds in the browser: an injected inline script does not run, and the refusal is reported.
    blocked = await page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.injected = 1'; document.head.appendChild(s); return window.injected === undefined; }""")
    await page.wait_for_timeout(200)
    assert blocked and any("Content Security Policy" in e for e in _errors), _errors
    _errors.clear()
    await _close(page)


async def test_a_member_cannot_reach_admin_pages(browser: Any, console: Console) -> None:
    member = console.key("viewer", "member")
    page = await _page(browser, console, member["key"], PHONE)
    assert "for admin keys" in await page.inner_text("main")
    await _shot(page, "member-overview-phone")
    await page.goto(f"{console.url}/ui/data/requests")
    assert await page.get_attribute(".error-page", "data-status") == "403"
    assert "needs an admin key" in await page.inner_text("main")
    await _shot(page, "forbidden-phone")
    await _close(page)


async def test_revoking_the_key_ends_the_session(browser: Any, console: Console) -> None:
    key = console.key("short-lived", "admin")
    page = await _page(browser, console, key["key"])
    await page.goto(f"{console.url}/ui/agents")
    assert page.url.endswith("/ui/agents")
    revoked = console.api.delete(f"/api/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    await page.goto(f"{console.url}/ui/agents")
    assert "/ui/login" in page.url
    await _shot(page, "login-desktop")
    await _close(page)


async def test_sign_out_ends_the_session(browser: Any, console: Console) -> None:
    page = await _page(browser, console)
    await page.click("text=Sign out")
    await page.wait_for_url("**/ui/login")
    await page.goto(f"{console.url}/ui/")
    assert "/ui/login" in page.url
    await _close(page)
