"""``warden webhooks``: a workspace's outbound webhooks (add, list, remove, test) and
their delivery log; through the server, or on the database directly with none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import Col, JsonOpt, WorkspaceOpt, dispatch, key_workspace, out, show

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

webhooks_app = typer.Typer(help="Outbound webhooks: add, list, remove, test, deliveries.", no_args_is_help=True)

WEBHOOK_COLS = [Col("id", "id", id=True), Col("url", "url"), Col("events", "events"), Col("format", "format"),
                Col("active", "active"), Col("created", "created_at")]
DELIVERY_COLS = [Col("id", "id", id=True), Col("event", "event_type"), Col("status", "status"),
                 Col("attempts", "attempts"), Col("last status", "last_status"), Col("last error", "last_error"),
                 Col("created", "created_at")]


async def _workspace_id(s: Services, workspace: str | None) -> str:
    return (await s.accounts.workspace_by_name(workspace or "default")).id


@webhooks_app.command("add")
def webhooks_add(
    url: str,
    events: Annotated[list[str], typer.Option("--events", "-e", help=(
        "An event to send (repeat, or comma-separated): approval.required, approval.decided, "
        "agent.tier_changed, budget.threshold, or '*'."))],
    slack: Annotated[bool, typer.Option("--slack", help="Send Slack-compatible messages.")] = False,
    secret: Annotated[str | None, typer.Option(help="Signing secret (default: generated; shown once).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Add a webhook; its signing secret is printed this once."""
    body: dict[str, Any] = {"url": url, "events": [e.strip() for item in events for e in item.split(",") if e.strip()],
                            "format": "slack" if slack else "warden"}
    if secret is not None:
        body["secret"] = secret

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post("/api/webhooks", body)

    async def local(s: Services) -> dict[str, Any]:
        created = await s.webhooks.create(await _workspace_id(s, workspace), body, actor="cli")
        return created.model_dump(mode="json")

    w = dispatch(remote, local)
    out.print(f"webhook {w['id']} -> {w['url']} ({', '.join(w['events'])}, {w['format']})", highlight=False)
    out.print(f"secret: {w['secret']}", highlight=False, soft_wrap=True)
    out.print("(shown once: receivers verify X-Warden-Signature with it)", highlight=False)


@webhooks_app.command("list")
def webhooks_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List the workspace's webhooks (never their secrets)."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/webhooks")

    async def local(s: Services) -> list[dict[str, Any]]:
        return [w.model_dump(mode="json") for w in await s.webhooks.list(await _workspace_id(s, workspace))]

    show(dispatch(remote, local), WEBHOOK_COLS, as_json=as_json)


@webhooks_app.command("remove")
def webhooks_remove(webhook_id: str, workspace: WorkspaceOpt = None) -> None:
    """Remove a webhook and its delivery log."""

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.delete(f"/api/webhooks/{webhook_id}")

    async def local(s: Services) -> dict[str, Any]:
        gone = await s.webhooks.delete(await _workspace_id(s, workspace), webhook_id, actor="cli")
        return gone.model_dump(mode="json")

    w = dispatch(remote, local)
    out.print(f"webhook {w['id']} removed ({w['url']})", highlight=False)


@webhooks_app.command("test")
def webhooks_test(webhook_id: str, workspace: WorkspaceOpt = None) -> None:
    """Queue a webhook.test event; `webhooks deliveries ID` shows how it went."""

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post(f"/api/webhooks/{webhook_id}/test")

    async def local(s: Services) -> dict[str, Any]:
        d = await s.webhooks.test(await _workspace_id(s, workspace), webhook_id, actor="cli")
        return d.model_dump(mode="json")

    d = dispatch(remote, local)
    out.print(f"test event queued: delivery {d['id']} ({d['status']})", highlight=False)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    webhook_id: str,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A webhook's delivery log, newest first: status, attempts, the receiver's last answer."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get(f"/api/webhooks/{webhook_id}/deliveries", limit=limit)

    async def local(s: Services) -> list[dict[str, Any]]:
        rows = await s.webhooks.deliveries(await _workspace_id(s, workspace), webhook_id, limit=limit)
        return [d.model_dump(mode="json") for d in rows]

    show(dispatch(remote, local), DELIVERY_COLS, as_json=as_json)
