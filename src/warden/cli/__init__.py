"""The ``warden`` command: the root and its command groups, one module per domain.
Management commands act on the configured database directly, so they work
before the server starts."""

from __future__ import annotations

import sys

import typer

from warden.cli import agents, audit, routing, server, tenancy

app = typer.Typer(help="Warden: governed AI agents on your own LLM keys.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.command()(server.serve)
app.command("migrate")(server.migrate_cmd)
app.command("usage")(tenancy.usage_cmd)
app.add_typer(tenancy.keys_app, name="keys")
app.add_typer(tenancy.ws_app, name="workspaces")
app.add_typer(tenancy.byok_app, name="byok")
app.add_typer(tenancy.vault_app, name="vault")
app.add_typer(routing.route_app, name="route")
app.add_typer(agents.agents_app, name="agents")
app.add_typer(agents.approvals_app, name="approvals")
app.add_typer(audit.audit_app, name="audit")


def main() -> None:
    app(prog_name="warden")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
