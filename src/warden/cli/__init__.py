"""The ``warden`` command: the root and its command groups, one module per domain.
Commands are clients of the running server of their data directory (``cli/client.py``);
how a command runs without one is in ``cli/common.py``."""

from __future__ import annotations

import sys

from typing import Annotated

import typer
from typer.core import TyperOption

from warden.cli import agents, audit, chat, routing, server, tenancy
from warden.cli import webhooks
from warden.cli import mcp_servers
from warden.cli import hook

_option_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx):  # noqa: ANN001, ANN202 - click's signature
    """A flag takes no value: show none (typer >= 0.20 prints ``--help <bool>``)."""
    return None if self.is_flag and self.metavar is None else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(help="Warden: governed AI agents on your own LLM keys.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def root(version: Annotated[bool, typer.Option(
        "--version", callback=server.version_callback, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Warden: governed AI agents on your own LLM keys."""


app.command()(server.serve)
app.command("init")(server.init_cmd)
app.command("migrate")(server.migrate_cmd)
app.command("status")(server.status_cmd)
app.command("chat")(chat.chat_cmd)
app.command("usage")(tenancy.usage_cmd)
app.add_typer(tenancy.keys_app, name="keys")
app.add_typer(tenancy.ws_app, name="workspaces")
app.add_typer(tenancy.byok_app, name="byok")
app.add_typer(tenancy.vault_app, name="vault")
app.add_typer(routing.route_app, name="route")
app.add_typer(routing.models_app, name="models")
app.add_typer(routing.groups_app, name="groups")
app.add_typer(agents.agents_app, name="agents")
app.add_typer(agents.approvals_app, name="approvals")
app.add_typer(agents.runs_app, name="runs")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(webhooks.webhooks_app, name="webhooks")
app.add_typer(mcp_servers.mcp_servers_app, name="mcp-servers")
app.add_typer(hook.hook_app, name="hook")


def main() -> None:
    app(prog_name="warden")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
