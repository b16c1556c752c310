"""The audit log: verify it (the database, or an export with the public key alone),
export it, print the checkpoint signing key's public half; explain an agent's actions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import (
    Col,
    JsonOpt,
    WorkspaceOpt,
    direct,
    dispatch,
    fail,
    key_workspace,
    operator,
    out,
    run_with_services,
    settings_or_exit,
    show,
)

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services
    from warden.store.audit import VerifyResult

audit_app = typer.Typer(help="The hash-chained, signed audit log: verify, export, public-key.",
                        no_args_is_help=True)


def _report(result: VerifyResult, what: str) -> None:
    if not result.ok:
        at = f" at event {result.broken_seq}" if result.broken_seq is not None else ""
        fail(f"{what} broken{at}: {result.reason} ({result.count} event(s) before it verified)")
    if not result.checkpoints:
        line = (f"{what} ok: {result.count} events; no signed checkpoint yet, so only the chain's "
                "own consistency was checked")
    else:
        line = (f"{what} ok: {result.count} events; {result.checkpoints} signed checkpoint(s) match, "
                f"the latest covers event {result.anchored_seq} (signed {result.anchored_ts})")
        if result.count > result.anchored_seq:
            line += f"; {result.count - result.anchored_seq} later event(s) not anchored yet"
    if result.seals or result.unsealed_rows:  # the database's spend ledger (an export holds no rows)
        line += f"; {result.seals} spend seal(s) match their {result.sealed_rows} row(s)"
        if result.unsealed_rows:  # the sealer seals them within seconds (--seal: now)
            line += f"; {result.unsealed_rows} spend row(s) not yet sealed"
    out.print(line, highlight=False, soft_wrap=True)


@audit_app.command("verify")
def audit_verify(
    export: Annotated[Path | None, typer.Option(
        "--export", help="Check this export (`audit export --checkpoints`) instead of the database.",
        dir_okay=False)] = None,
    public_key: Annotated[str | None, typer.Option(
        "--public-key", help="With --export: the signer's public key (base64, or a file holding it).")] = None,
    seal: Annotated[bool, typer.Option(
        "--seal", help="Seal the spend rows committed so far first, instead of counting them as "
        "not yet sealed.")] = False,
) -> None:
    """Check every event's link and hash and every signed checkpoint; exit 1 naming
    the first broken event."""
    if export is None:
        if public_key is not None:
            fail("--public-key goes with --export (the database is checked with this server's own key)", 2)
        direct(settings_or_exit(), "verifying the database directly")
        result = run_with_services(lambda s: s.audit_log.verify(seal_first=seal), bootstrap=False)
        _report(result, "audit chain")
        return
    from warden.store.checkpoints import CheckpointError, parse_public_key, verify_export

    if seal:
        fail("--seal goes with the database (an export holds no spend rows)", 2)
    if public_key is None:
        fail("--export needs --public-key: the signer's public key, from `warden audit public-key`, "
             "obtained from its operator (never from the export itself)", 2)
        return
    text = Path(public_key).read_text() if Path(public_key).is_file() else public_key
    try:
        key = parse_public_key(text)
        with export.open("rb") as f:
            result = verify_export(f, key)
    except (CheckpointError, OSError) as exc:
        fail(getattr(exc, "message", None) or str(exc), 2)
        return
    _report(result, f"export {export.name}")


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="jsonl (one event per line).")] = "jsonl",
    workspace: Annotated[str | None, typer.Option(help="Only this workspace (default: all).")] = None,
    checkpoints: Annotated[bool, typer.Option(
        "--checkpoints", help="Sign the head now and include the public key and every checkpoint, "
        "so a third party can verify the export with `audit verify --export`.")] = False,
) -> None:
    """Write the audit log to stdout, one JSON event per line, in chain order."""
    if format != "jsonl":
        fail("--format: only jsonl is supported", 2)
    if checkpoints and workspace:
        fail("--checkpoints: a signed export holds the whole chain (its hashes link every "
             "workspace's events); drop --workspace", 2)
    import orjson

    async def fn(s: Services) -> None:
        if checkpoints:
            async for line in s.audit_log.signed_export():
                sys.stdout.buffer.write(line)
        else:
            ws_id = (await s.accounts.workspace_by_name(workspace)).id if workspace else None
            async for event in s.audit_log.export(ws_id):
                sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
        sys.stdout.flush()

    direct(settings_or_exit(), "exporting from the database directly")
    run_with_services(fn, bootstrap=False)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public key that checks this server's audit checkpoints (safe to share)."""
    from warden.store.checkpoints import public_key_text
    from warden.vault.cipher import VaultError
    from warden.vault.keyring import load_audit_signing_key

    settings = settings_or_exit()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        key = load_audit_signing_key(settings.audit_signing_key, settings.data_dir)
    except VaultError as exc:
        fail(exc.message)
        return
    out.print(public_key_text(key), highlight=False, soft_wrap=True)


def _explained(a: dict[str, Any]) -> dict[str, Any]:
    """One action as a table row: the tool or the provider/model, who decided, what it cost."""
    if a["kind"] == "model_call":
        what = "/".join(x for x in (a.get("provider"), a.get("model")) if x) or "-"
        return {"at": a["at"], "kind": "model", "what": what, "decision": a["status"],
                "outcome": f"{a['input_tokens']} in / {a['output_tokens']} out",
                "cost": a["cost_usd"] if a.get("cost_usd") is not None else "unpriced"}
    approval = a.get("approval") or {}
    by = f"{approval['status']} by {approval['decided_by']}" if approval.get("decided_by") else approval.get("status")
    return {"at": a["at"], "kind": f"tool ({a['source']})", "what": a["tool"], "level": a.get("level"),
            "decision": f"{a['decision']} -> {a['status']}", "approval": by,
            "note": approval.get("note"), "outcome": a.get("outcome")}


@audit_app.command("explain")
def audit_explain(
    agent: Annotated[str, typer.Argument(help="Agent id or name.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="How many of the newest actions.")] = 50,
    before: Annotated[str | None, typer.Option("--before", help="next_cursor of a previous page.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An agent's last actions, newest first: its tool calls (the decision, the rule, who
    approved a held one, the outcome) and its model calls (tokens, cost), with totals."""
    from warden.governance.actions import list_actions

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.get(f"/api/agents/{agent}/actions", limit=limit, before=before)

    async def local(s: Services) -> dict[str, Any]:
        ws = await s.accounts.workspace_by_name(workspace or "default")
        page = await list_actions(s.db, operator(ws.id, ws.name), agent, limit=limit, before=before)
        return page.model_dump(mode="json")

    page = dispatch(remote, local)
    if as_json:
        out.print_json(data=page)
        return
    show([_explained(a) for a in page["actions"]],
         [Col("time", "at"), Col("kind", "kind"), Col("tool / model", "what"), Col("level", "level"),
          Col("decision", "decision"), Col("approval / by", "approval"), Col("outcome", "outcome"),
          Col("cost $", "cost"), Col("note", "note")])
    t = page["totals"]
    out.print(f"{page['agent']} ({page['agent_kind']}): {t['actions']} action(s), {t['tool_calls']} tool "
              f"call(s), {t['model_calls']} model call(s); {t['held']} held, {t['denied']} denied; "
              f"cost ${t['cost_usd']}", highlight=False, soft_wrap=True)
    if page.get("next_cursor"):
        out.print(f"older: --before {page['next_cursor']}", highlight=False, soft_wrap=True)
