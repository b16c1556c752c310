"""Outbound webhooks: the admin API, signed delivery to a loopback receiver, retries
with backoff, giving up (after the attempts allowed, or at once on 410), the Slack
format, the address policy at creation and at send, and the secret kept sealed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, client_for
from tests.support.webhooks import Receiver, hooked_services, receiver, until
from warden.cli import app as cli_app
from warden.config import load_settings
from warden.netpolicy import AddressPolicy
from warden.services import Services
from warden.store.webhook_models import Webhook, WebhookDelivery
from warden.tenancy.webhook_delivery import DeliveryConfig, WebhookWorker, backoff
from warden.tenancy.webhook_payloads import verify
from warden.tenancy.webhooks import sealing_ids


@pytest.fixture
async def svc(data_dir: Path) -> AsyncIterator[Services]:
    s = await hooked_services(data_dir)
    yield s
    await s.close()


@pytest.fixture
async def rec() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


async def _deliveries(c, hook_id: str) -> list[dict]:
    r = await c.get(f"/api/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()


async def _settled(c, hook_id: str, count: int = 1) -> list[dict]:
    async def done() -> list[dict] | None:
        rows = await _deliveries(c, hook_id)
        return rows if len(rows) >= count and all(d["status"] in ("delivered", "failed") for d in rows) else None

    return await until(done)


async def test_create_shows_the_secret_once_and_a_test_event_arrives_signed(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        r = await c.post("/api/webhooks", json={"url": rec.url, "events": ["approval.required", "budget.threshold"]})
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["secret"]
        listed = (await c.get("/api/webhooks")).json()
        t = await c.post(f"/api/webhooks/{created['id']}/test")
        assert t.status_code == 202, t.text
        [delivery] = await _settled(c, created["id"])
    assert secret.startswith("whsec_") and len(secret) > 30
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 1, 200)
    assert delivery["event_type"] == "webhook.test" and t.json()["id"] == delivery["id"]
    [got] = rec.received
    h = got.headers
    assert (h["x-warden-event"], h["x-warden-delivery"]) == ("webhook.test", delivery["id"])
    assert verify(secret, h["x-warden-timestamp"], got.body, h["x-warden-signature"])
    assert not verify(secret, str(int(h["x-warden-timestamp"]) + 1), got.body, h["x-warden-signature"])
    assert not verify("whsec_another-secret-entirely", h["x-warden-timestamp"], got.body, h["x-warden-signature"])
    body = got.json
    assert (body["type"], body["id"], body["data"]["webhook_id"]) == ("webhook.test", delivery["event_id"],
                                                                      created["id"])
    # Stored sealed: the row holds ciphertext that opens (with the vault) to the secret, not the secret.
    async with svc.db.session() as s:
        row = (await s.execute(select(Webhook))).scalar_one()
    assert secret.encode() not in row.secret_ciphertext
    assert svc.vault.open((row.secret_ciphertext, row.secret_key_id), **sealing_ids(row)) == secret


async def test_a_given_secret_is_used_and_bad_input_gets_typed_errors(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        given = await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"], "secret": "s3cret-of-my-own-choosing"})
        unknown = await c.post("/api/webhooks", json={"url": rec.url, "events": ["run.exploded"]})
        no_http = await c.post("/api/webhooks", json={"url": "ftp://example.com/x", "events": ["*"]})
        short = await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"], "secret": "short"})
        missing = await c.delete("/api/webhooks/wh_nope")
        missing_log = await c.get("/api/webhooks/wh_nope/deliveries")
        await c.post(f"/api/webhooks/{given.json()['id']}/test")
        await _settled(c, given.json()["id"])
    assert given.status_code == 201 and given.json()["secret"] == "s3cret-of-my-own-choosing"
    got = rec.received[0]
    assert verify("s3cret-of-my-own-choosing", got.headers["x-warden-timestamp"], got.body,
                  got.headers["x-warden-signature"])
    for bad, where in ((unknown, "run.exploded"), (no_http, "http(s) URL"), (short, "secret")):
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request_error", bad.text
        assert where in bad.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "webhook_not_found"
    assert missing_log.status_code == 404


async def test_retries_after_a_500_then_delivers(svc: Services, rec: Receiver) -> None:
    rec.statuses = [500, 503]
    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [d] = await _settled(c, hook["id"])
    assert (d["status"], d["attempts"], d["last_status"], d["last_error"]) == ("delivered", 3, 200, None)
    assert [e["status"] for e in d["log"]] == [500, 503, 200]
    assert [e["attempt"] for e in d["log"]] == [1, 2, 3]
    # The same delivery (same id, same event) each time, signed each time.
    assert {r.headers["x-warden-delivery"] for r in rec.received} == {d["id"]}
    assert len({r.json["id"] for r in rec.received}) == 1


async def test_gives_up_after_the_attempts_allowed_with_each_status_logged(svc: Services, rec: Receiver) -> None:
    rec.statuses = [500, 502, 429, 200]  # the 4th would succeed, but 3 attempts are allowed
    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [d] = await _settled(c, hook["id"])
    assert (d["status"], d["attempts"], d["last_status"]) == ("failed", 3, 429)
    assert [e["status"] for e in d["log"]] == [500, 502, 429]
    assert d["last_error"] == "HTTP 429" and d["delivered_at"] is None
    assert len(rec.received) == 3


async def test_410_stops_at_once(svc: Services, rec: Receiver) -> None:
    rec.statuses = [410]
    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [d] = await _settled(c, hook["id"])
    assert (d["status"], d["attempts"], d["last_status"]) == ("failed", 1, 410)
    assert "410" in d["last_error"] and len(rec.received) == 1


async def test_an_unreachable_receiver_is_retried_then_given_up(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        dead = "http://127.0.0.1:1/hook"  # nothing listens on port 1 of loopback
        hook = (await c.post("/api/webhooks", json={"url": dead, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [d] = await _settled(c, hook["id"])
    assert (d["status"], d["attempts"], d["last_status"]) == ("failed", 3, None)
    assert all(e["status"] is None and e["error"] for e in d["log"]) and len(d["log"]) == 3


async def test_slack_format_is_a_readable_message(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"], "format": "slack"})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        await _settled(c, hook["id"])
    body = rec.received[0].json
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "Warden test event: this webhook works"
    assert body["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": f"*{body['text']}*"}}
    assert body["blocks"][-1]["type"] == "context" and "webhook.test" in body["blocks"][-1]["elements"][0]["text"]


async def test_the_address_policy_applies_at_creation_and_at_send(data_dir: Path, rec: Receiver) -> None:
    strict = await hooked_services(data_dir, egress_allow="")
    try:
        async with client_for(strict) as c:
            for url in (rec.url, f"http://localhost:{rec.port}/hook", f"http://[::ffff:127.0.0.1]:{rec.port}/x",
                        f"http://2130706433:{rec.port}/x"):
                r = await c.post("/api/webhooks", json={"url": url, "events": ["*"]})
                assert r.status_code == 422, (url, r.text)
                assert r.json()["error"]["code"] == "url_refused" and "WARDEN_EGRESS_ALLOW" in r.text
            assert (await c.get("/api/webhooks")).json() == []
    finally:
        await strict.close()
    # Allowed when created, refused when sent (the operator narrowed the policy since): by
    # address for an IP literal, by the connection's resolver for a name. No worker of its
    # own here (not serving), so the narrowed worker below is the only sender.
    svc = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                             egress_allow="127.0.0.1"), serving=False)
    try:
        async with client_for(svc) as c:
            for url in (rec.url, f"http://localhost:{rec.port}/hook"):
                hook = (await c.post("/api/webhooks", json={"url": url, "events": ["*"]})).json()
                await c.post(f"/api/webhooks/{hook['id']}/test")
            narrowed = WebhookWorker(svc.db, svc.vault, egress=AddressPolicy(),
                                     config=DeliveryConfig(max_attempts=1, timeout_s=2, poll_s=60))
            assert await narrowed.run_once() == 2
            async with svc.db.session() as s:
                rows = (await s.execute(select(WebhookDelivery))).scalars().all()
    finally:
        await svc.close()
    assert [d.status for d in rows] == ["failed", "failed"] and rec.received == []
    for d in rows:
        assert "refused" in d.last_error and "loopback" in d.last_error and "WARDEN_EGRESS_ALLOW" in d.last_error


async def test_removing_a_webhook_stops_its_events_and_drops_its_log(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        await _settled(c, hook["id"])
        gone = await c.delete(f"/api/webhooks/{hook['id']}")
        again = await c.delete(f"/api/webhooks/{hook['id']}")
        audit = (await c.get("/api/audit", params={"action": "webhook."})).json()["events"]
    assert gone.status_code == 200 and gone.json()["id"] == hook["id"] and "secret" not in gone.json()
    assert again.status_code == 404
    async with svc.db.session() as s:
        assert (await s.execute(select(WebhookDelivery))).scalars().all() == []
    assert sorted(e["action"] for e in audit) == ["webhook.created", "webhook.deleted"]
    assert all("secret" not in str(e["data"]) for e in audit)


async def test_members_may_not_manage_webhooks(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        member = (await c.post("/api/keys", json={"name": "m", "role": "member"})).json()
    async with client_for(svc, key=member["key"]) as m:
        r = await m.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})
        listed = await m.get("/api/webhooks")
    assert r.status_code == 403 and listed.status_code == 403


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for attempts, base in ((1, 5.0), (2, 5.0), (3, 5.0), (6, 2.0)):
        expected = base * 2 ** (attempts - 1)
        values = [backoff(attempts, base) for _ in range(200)]
        assert all(expected * 0.5 <= v <= expected for v in values)
        assert max(values) - min(values) > expected * 0.1  # jitter spreads the retries
    assert backoff(40, 5.0) <= 3600.0


def test_cli_add_list_test_deliveries_remove_on_the_database(data_dir: Path, rec_port: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WARDEN_EGRESS_ALLOW", "127.0.0.1")
    runner = CliRunner()
    assert runner.invoke(cli_app, ["migrate"]).exit_code == 0
    url = f"http://127.0.0.1:{rec_port}/hook"
    added = runner.invoke(cli_app, ["webhooks", "add", url, "--events", "approval.required,budget.threshold",
                                    "--slack"])
    assert added.exit_code == 0, added.output
    hook_id = re.search(r"webhook (wh_\w+) ->", added.output).group(1)
    assert "secret: whsec_" in added.output and "shown once" in added.output
    assert "acting on the database directly" in added.output
    listed = runner.invoke(cli_app, ["webhooks", "list", "--json"])
    assert listed.exit_code == 0 and hook_id in listed.output and "whsec_" not in listed.output
    assert "slack" in listed.output and "budget.threshold" in listed.output
    tested = runner.invoke(cli_app, ["webhooks", "test", hook_id])
    assert tested.exit_code == 0 and "test event queued" in tested.output
    log = runner.invoke(cli_app, ["webhooks", "deliveries", hook_id, "--json"])
    assert log.exit_code == 0 and "webhook.test" in log.output and '"pending"' in log.output
    bad = runner.invoke(cli_app, ["webhooks", "add", url, "--events", "nonsense"])
    assert bad.exit_code == 1 and "nonsense" in bad.output
    removed = runner.invoke(cli_app, ["webhooks", "remove", hook_id])
    assert removed.exit_code == 0 and f"webhook {hook_id} removed" in removed.output
    assert runner.invoke(cli_app, ["webhooks", "remove", hook_id]).exit_code == 1
    assert runner.invoke(cli_app, ["webhooks", "list", "--json"]).output.strip().endswith("[]")


@pytest.fixture
def rec_port() -> int:
    return 9  # nothing is sent here: the CLI's process is not serving, only a server sends


async def test_a_master_key_rotation_reseals_webhook_secrets(svc: Services, rec: Receiver) -> None:
    from warden.vault.keyring import decode_key, generate_master_key

    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        async with svc.db.session() as s:
            before = (await s.execute(select(Webhook))).scalar_one().secret_key_id
        result = await svc.byok.rotate_master_key(decode_key(generate_master_key(), "test"), actor="test")
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [d] = await _settled(c, hook["id"])
    async with svc.db.session() as s:
        after = (await s.execute(select(Webhook))).scalar_one().secret_key_id
    assert result.count == 1 and after == result.new_key_id != before
    got = rec.received[0]
    assert d["status"] == "delivered"
    assert verify(hook["secret"], got.headers["x-warden-timestamp"], got.body, got.headers["x-warden-signature"])


async def test_old_finished_deliveries_are_pruned(svc: Services, rec: Receiver) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from warden.store.base import utcnow

    async with client_for(svc) as c:
        hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
        await c.post(f"/api/webhooks/{hook['id']}/test")
        [done] = await _settled(c, hook["id"])
    async with svc.db.transaction() as s:
        await s.execute(update(WebhookDelivery).values(created_at=utcnow() - timedelta(days=31)))
    worker = WebhookWorker(svc.db, svc.vault, egress=AddressPolicy(), config=DeliveryConfig(poll_s=60))
    assert await worker.prune() == 1
    assert await worker.prune() == 0
    async with svc.db.session() as s:
        assert (await s.execute(select(WebhookDelivery))).scalars().all() == []
    assert done["status"] == "delivered"


async def test_a_receiver_that_answers_too_late_is_retried_as_timed_out(data_dir: Path, rec: Receiver) -> None:
    rec.delay_s = 1.0
    svc = await hooked_services(data_dir, webhook_timeout=0.2, webhook_max_attempts=2)
    try:
        async with client_for(svc) as c:
            hook = (await c.post("/api/webhooks", json={"url": rec.url, "events": ["*"]})).json()
            await c.post(f"/api/webhooks/{hook['id']}/test")
            [d] = await _settled(c, hook["id"])
    finally:
        await svc.close()
    assert (d["status"], d["attempts"], d["last_status"]) == ("failed", 2, None)
    assert [e["error"] for e in d["log"]] == ["timed out after 0.2 s"] * 2
