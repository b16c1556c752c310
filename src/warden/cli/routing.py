"""``warden route explain``: the routing plan for a prompt."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from warden.cli.common import out, run_with_services
from warden.services import Services

route_app = typer.Typer(help="Routing.", no_args_is_help=True)


@route_app.command("explain")
def route_explain(
    prompt: str,
    model: Annotated[str, typer.Option(help="auto, a model group, provider/model or a model id.")] = "auto",
    tools: Annotated[bool, typer.Option("--tools", help="The request offers tools.")] = False,
    image: Annotated[bool, typer.Option("--image", help="The request carries an image.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="The request's max_tokens.")] = None,
    prefer: Annotated[str, typer.Option(help="value, cost, quality or latency.")] = "value",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
) -> None:
    """Show the routing plan for a prompt: complexity, steps with scores and reasons."""
    from warden.api.route import ExplainBody, build_request
    from warden.gateway.context import CallContext
    from warden.gateway.context import RouteOptions

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        body = ExplainBody(model=model, prompt=prompt, tools=tools, image=image, max_tokens=max_tokens)
        ctx = CallContext(ws.id, None, "cli", RouteOptions.from_dict({"prefer": prefer}))
        plan = await s.gateway.plan(build_request(body), ctx)
        return plan

    plan = run_with_services(fn)
    c = plan.complexity
    out.print(f"model [bold]{plan.model_requested}[/bold] ({plan.kind}), complexity "
              f"[bold]{c.level}[/bold] (score {c.score:.2f}): {'; '.join(c.reasons) or 'no signals'}")
    table = Table("#", "deployment", "score", "reason")
    for i, step in enumerate(plan.steps, 1):
        table.add_row(str(i), step.deployment.name, f"{step.score:.3f}", step.reason)
    out.print(table)
    for who, why in plan.rejected[:20]:
        out.print(f"[dim]excluded {who}: {why}[/dim]", highlight=False)
