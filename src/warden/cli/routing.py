"""Routing: ``warden route explain`` (the plan for a prompt), ``warden models …`` (what
``model`` may be; ``warden models alias …``: names served as others) and
``warden groups …`` (named, ordered model lists)."""

from __future__ import annotations

import json
from urllib.parse import quote
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import Col, JsonOpt, WorkspaceOpt, dispatch, key_workspace, out, show

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

route_app = typer.Typer(help="Routing.", no_args_is_help=True)
models_app = typer.Typer(help="The models this workspace can call.", no_args_is_help=True)
groups_app = typer.Typer(help="Model groups: a name usable as `model`, tried in order.", no_args_is_help=True)


@route_app.command("explain")
def route_explain(
    prompt: str,
    model: Annotated[str, typer.Option(help="auto, a model group, provider/model or a model id.")] = "auto",
    tools: Annotated[bool, typer.Option("--tools", help="The request offers tools.")] = False,
    image: Annotated[bool, typer.Option("--image", help="The request carries an image.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="The request's max_tokens.")] = None,
    prefer: Annotated[str, typer.Option(help="value, cost, quality or latency.")] = "value",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the routing plan for a prompt: complexity, steps with scores and reasons
    (through a server: with its live health)."""
    body = {"model": model, "prompt": prompt, "tools": tools, "image": image, "max_tokens": max_tokens,
            "warden": {"prefer": prefer}}

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post("/api/route/explain", body)

    async def local(s: Services) -> dict[str, Any]:
        from warden.api.route import ExplainBody, build_request
        from warden.gateway.context import CallContext, RouteOptions

        ws = await s.accounts.workspace_by_name(workspace or "default")
        ctx = CallContext(ws.id, None, "cli", RouteOptions.from_dict({"prefer": prefer}))
        return (await s.gateway.plan(build_request(ExplainBody(**body)), ctx)).to_dict()

    plan = dispatch(remote, local)
    if as_json:
        print(json.dumps(plan, indent=2))
        return
    c = plan["complexity"]
    out.print(f"model [bold]{plan['model_requested']}[/bold] ({plan['kind']}), complexity "
              f"[bold]{c['level']}[/bold] (score {c['score']:.2f}): {'; '.join(c['reasons']) or 'no signals'}",
              highlight=False)
    steps = [{"n": i, **s, "score": f"{s['score']:.3f}", "name": f"{s['provider']}/{s['model']}"}
             for i, s in enumerate(plan["steps"], 1)]
    show(steps, [Col("#", "n"), Col("deployment", "name", id=True), Col("score", "score"),
                 Col("reason", "reason")])
    if line := guard_line(plan.get("cost_guard")):
        out.print(line, highlight=False)


def guard_line(guard: dict[str, Any] | None) -> str:
    """The cost guard of a plan, in a sentence (empty when there is none)."""
    if not guard:
        return ""
    if guard["max_factor"] is None:
        return "cost guard: lifted by the request (any fallback may be used)"
    if not guard["applied"]:
        return f"cost guard: {guard['reference']} has no known price, so fallbacks are not limited"
    held = f"; {guard['excluded']} pricier step(s) held back" if guard["excluded"] else ""
    return (f"cost guard: fallbacks up to {guard['max_factor']:g}x the first choice "
            f"{guard['reference']} (about ${guard['reference_cost_usd']} for this request){held}")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Every name `model` may take here: auto, the groups, each served model."""
    rows = dispatch(lambda c: c.get("/v1/models")["data"])
    for r in rows:
        r["what"] = r.get("kind") or ("model" if r.get("owned_by") != "warden" else "-")
        r["ctx"] = r.get("context_window")
        r["caps"] = r.get("capabilities") or r.get("members")
    show(rows, [Col("model", "id", id=True), Col("kind", "what"), Col("provider", "owned_by"),
                Col("context", "ctx"), Col("capabilities / members", "caps")], as_json=as_json)


@groups_app.command("list")
def groups_list(as_json: JsonOpt = False) -> None:
    """The workspace's model groups."""
    show(dispatch(lambda c: c.get("/api/model-groups")),
         [Col("name", "name", id=True), Col("members (in order)", "members"), Col("created", "created_at")],
         as_json=as_json)


@groups_app.command("set")
def groups_set(name: str, members: Annotated[list[str], typer.Argument(
        help="Models in the order they are tried (provider/model or a model id).")]) -> None:
    """Create or replace a group."""
    group = dispatch(lambda c: c.put(f"/api/model-groups/{name}", {"members": members}))
    out.print(f"group {group['name']}: {', '.join(group['members'])}", highlight=False)


@groups_app.command("remove")
def groups_remove(name: str) -> None:
    """Delete a group."""
    dispatch(lambda c: c.delete(f"/api/model-groups/{name}"))
    out.print(f"group {name} removed", highlight=False)


alias_app = typer.Typer(help="Model aliases: names (with * wildcards) served as a group, auto or a model.",
                        no_args_is_help=True)
models_app.add_typer(alias_app, name="alias")


@alias_app.command("list")
def alias_list(as_json: JsonOpt = False) -> None:
    """The workspace's model aliases."""
    show(dispatch(lambda c: c.get("/api/model-aliases")),
         [Col("pattern", "pattern", id=True), Col("target", "target"), Col("created", "created_at")],
         as_json=as_json)


@alias_app.command("add")
def alias_add(pattern: Annotated[str, typer.Argument(help="A model name; * matches any characters.")],
              target: Annotated[str, typer.Argument(
                  help="A group, auto, provider/model, provider/* or a model id.")]) -> None:
    """Create an alias, or point an existing one at a new target."""
    alias = dispatch(lambda c: c.post("/api/model-aliases", {"pattern": pattern, "target": target}))
    out.print(f"alias {alias['pattern']} -> {alias['target']}", highlight=False)


@alias_app.command("remove")
def alias_remove(pattern: str) -> None:
    """Delete an alias."""
    dispatch(lambda c: c.delete(f"/api/model-aliases/{quote(pattern, safe='/')}"))
    out.print(f"alias {pattern} removed", highlight=False)
