"""The gateway: plan a route, walk it with retries, breakers and failover, and
meter every request in exact dollars.

It knows nothing of HTTP frameworks, agents or governance: the API layer and
the agent runtime both call :meth:`Gateway.complete` / :meth:`Gateway.open_stream`.
Credentials and model groups come from injected sources, so this module only
depends on the layers below it. :meth:`Gateway.embed` takes the same path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from warden import tracing
from warden.errors import InvalidRequest, NotFound, ServiceUnavailable
from warden.gateway.catalog import Catalog, ModelOverride
from warden.gateway.complexity import estimate_tokens
from warden.gateway.errors import ProviderError
from warden.gateway.failover import Attempt, Failover, endpoint_key
from warden.gateway.health import HealthTracker
from warden.gateway.context import CallContext
from warden.gateway.limits import Admission, Limiter
from warden.gateway.metering import CallInfo, failure_row, spend_row
from warden.gateway.complexity import estimate_tokens
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.providers.registry import PROVIDERS
from warden.gateway.routing import RoutePlan, plan_route, reachable
from warden.gateway.deployment import Deployment
from warden.gateway.embeddings import auto_model
from warden.gateway.stream import GatewayStream, aclose_events, shielded
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Endpoint,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCallDelta,
    Usage,
)
from warden.state.base import StateStore, StateUnavailable

log = logging.getLogger("warden.gateway")
_R = TypeVar("_R", ChatResponse, EmbeddingResponse)
_T = TypeVar("_T")
_Req = TypeVar("_Req", ChatRequest, EmbeddingRequest)

_CONTENT_EVENTS = (TextDelta, ReasoningDelta, ToolCallDelta, FinishEvent)
_NAMED_LIMIT = 1_000  # cached deployments for uncatalogued names, per workspace
# What an unserved ``claude-*`` name with no alias gets (Claude Code's hard-coded
# defaults): the workspace's best Anthropic deployment, else ``auto``.
CLAUDE_DEFAULT = ("anthropic/*", "auto")


class ModelEntry(Protocol):
    id: str


class CredentialLike(Protocol):
    id: str
    provider: str
    models: Sequence[ModelEntry]  # empty: the catalog's known models of the provider
    overrides: Mapping[str, ModelOverride]  # model id -> what the credential says of it

    def endpoint(self, model: str, timeouts: Timeouts | None = None) -> Endpoint:
        """Where and how to call ``model`` with this credential's key."""
        ...


CredentialSource = Callable[[str], Awaitable[Sequence[CredentialLike]]]
GroupSource = Callable[[str], Awaitable[Mapping[str, list[str]]]]
AliasSource = Callable[[str, str], Awaitable[str | None]]  # (workspace, model) -> target
# Queues a ledger row; may return what resolves once it is committed (awaited, bounded,
# before a completed response leaves: store/spend.py).
SpendSink = Callable[[dict[str, Any]], Awaitable[Any] | None]
UsedSink = Callable[[str], None]


@dataclass(slots=True)
class GatewayConfig:
    max_retries: int = 2  # extra tries on the same deployment for a retryable error
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 5.0  # a longer retry-after moves on to the next deployment
    deadline_s: float = 300.0  # whole request, all attempts included
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_attempts: int = 6  # one request, over its whole plan, retries included
    endpoint_max_attempts: int = 3  # one request, on one host + credential
    endpoint_cooldown_s: float = 5.0  # an unreachable endpoint is skipped, then probed
    fallback_cost_factor: float | None = 4.0  # cost guard; None: off (see cost_guard.py)


@dataclass(slots=True)
class _Workspace:
    """A workspace's deployments, rebuilt only when its credentials change."""

    source: Sequence[CredentialLike]
    deployments: list[Deployment]
    credentials: dict[str, CredentialLike]
    overrides: dict[str, ModelOverride | None]
    # (provider, lowercased model) of ``deployments``, and the deployments made for
    # ``provider/model`` names the catalog does not list: both asked for per request.
    known: set[tuple[str, str]] = field(default_factory=set)
    named: dict[str, list[Deployment]] = field(default_factory=dict)
    endpoint_keys: dict[str, str] = field(default_factory=dict)  # deployment id -> its endpoint's


class Gateway:
    def __init__(self, *, credentials: CredentialSource, groups: GroupSource, state: StateStore,
                 catalog: Catalog, spend: SpendSink, config: GatewayConfig | None = None,
                 on_credential_used: UsedSink | None = None, limiter: Limiter | None = None,
                 aliases: AliasSource | None = None, health: HealthTracker | None = None) -> None:
        self._credentials = credentials
        self._aliases = aliases
        self.limiter = limiter  # budgets and rate limits; None: unmetered (tests, embedders)
        self._on_used = on_credential_used
        self._groups = groups
        self.catalog = catalog
        self._spend = spend
        self.config = config or GatewayConfig()
        self.health = health or HealthTracker()
        self.failover = Failover(state, self.health, self.config)
        self._workspaces: dict[str, _Workspace] = {}

    @property
    def state(self) -> StateStore:
        return self.failover.state

    @state.setter
    def state(self, store: StateStore) -> None:
        self.failover.state = store

    # --- planning -------------------------------------------------------------

    async def _workspace(self, workspace_id: str) -> _Workspace:
        creds = await self._credentials(workspace_id)
        cached = self._workspaces.get(workspace_id)
        if cached is not None and _same_objects(cached.source, creds):
            return cached
        deployments: list[Deployment] = []
        overrides: dict[str, ModelOverride | None] = {}
        for cred in creds:
            if cred.models:
                pairs = [(m.id, cred.overrides.get(m.id)) for m in cred.models]
            else:
                pairs = [(m, None) for m in self.catalog.known_models(cred.provider)]
            for model, override in pairs:
                dep = Deployment.build(cred.provider, model, cred.id, catalog=self.catalog,
                                       overrides=override)
                deployments.append(dep)
                overrides[dep.id] = override
        ws = _Workspace(creds, deployments, {c.id: c for c in creds}, overrides,
                        known={(d.provider, d.model.lower()) for d in deployments})
        self._workspaces[workspace_id] = ws
        return ws

    def _with_named(self, ws: _Workspace, names: Sequence[str]) -> list[Deployment]:
        """Deployments plus any ``provider/model`` asked for by name that a key of that
        provider can serve although the catalog does not list it (e.g. local models)."""
        extra: list[Deployment] = []
        seen: set[tuple[str, str]] = set()
        for name in names:
            provider, sep, model = name.partition("/")
            key = (provider, model.lower())
            if not sep or not model or key in ws.known or key in seen:
                continue
            seen.add(key)
            made = ws.named.get(name)
            if made is None:
                if len(ws.named) >= _NAMED_LIMIT:  # names come from clients: keep it bounded
                    ws.named.clear()
                made = ws.named[name] = [
                    Deployment.build(provider, model, cred.id, catalog=self.catalog)
                    for cred in ws.credentials.values() if cred.provider == provider]
            extra.extend(made)
        return ws.deployments + extra if extra else ws.deployments

    async def plan(self, req: ChatRequest, ctx: CallContext) -> RoutePlan:
        """The route a request would take now (``route explain``, the agent runtime's probe)."""
        return (await self._plan(req, ctx))[0]

    async def open_breakers(self, workspace_id: str) -> dict[str, str]:
        """The workspace's deployments whose breaker (their own or their endpoint's) is not
        closed: deployment id -> "open" or "half_open" (the console's "breakers open now")."""
        ws = await self._workspace(workspace_id)
        deployments = [*ws.deployments, *(d for made in ws.named.values() for d in made)]
        return await self.failover.breakers(deployments, lambda d: self._endpoint_key(ws, d))

    async def _cost_factor(self, workspace_id: str) -> float | None:
        """The cost guard's factor: the workspace's own (its operator may allow pricier
        failover), else the server's setting."""
        if self.limiter is not None:
            try:
                own = (await self.limiter.limits(workspace_id)).fallback_cost_factor
            except Exception:  # admission reports an unavailable database; planning keeps the setting
                own = None
            if own is not None:
                return own
        return self.config.fallback_cost_factor

    async def _plan(self, req: ChatRequest, ctx: CallContext) -> tuple[RoutePlan, _Workspace]:
        ws = await self._workspace(ctx.workspace_id)
        groups = await self._groups(ctx.workspace_id)
        target = None if self._aliases is None else await self._aliases(ctx.workspace_id, req.model)
        names = [target or req.model]
        if target is None and req.model.lower().startswith("claude-"):
            names += CLAUDE_DEFAULT  # tried only if the name itself is not served
        deployments = _native_only(self._with_named(ws, [names[0], *ctx.options.fallbacks]), req)
        deployments = reachable([*names, *ctx.options.fallbacks], deployments, groups)
        breakers = await self.failover.breakers(deployments, lambda d: self._endpoint_key(ws, d))
        health = self.health.snapshot((d.id for d in deployments), breakers)
        first: NotFound | None = None
        factor = await self._cost_factor(ctx.workspace_id)
        for name in names:
            try:
                plan = plan_route(_with(req, model=name), deployments, groups=groups, health=health,
                                  options=ctx.options, catalog=self.catalog,
                                  max_fallback_cost_factor=factor)
                return plan, ws
            except NotFound as exc:
                first = first or exc
            except InvalidRequest as exc:  # nothing left to serve it: name the fields that narrowed it
                raise (_unsupported(req) or exc) from None
        assert first is not None  # names is never empty
        raise _unsupported(req) or first

    # --- calling --------------------------------------------------------------

    def _endpoint(self, ws: _Workspace, dep: Deployment) -> Endpoint:
        return ws.credentials[dep.credential_id or ""].endpoint(dep.model, self.config.timeouts)

    def _endpoint_key(self, ws: _Workspace, dep: Deployment) -> str:
        key = ws.endpoint_keys.get(dep.id)
        if key is None:
            key = ws.endpoint_keys[dep.id] = endpoint_key(dep, self._endpoint(ws, dep))
        return key

    async def _record(self, dep: Deployment, error: ProviderError | None, latency_ms: float) -> None:
        await self.failover.record(dep, error, latency_ms)

    async def _walk(self, plan: RoutePlan, ws: _Workspace, run: Attempt,
                    call: Callable[[Endpoint], Awaitable[_T]]) -> tuple[_T, Deployment]:
        result = await self.failover.walk(plan, run, lambda d: self._endpoint(ws, d),
                                          lambda d: self._endpoint_key(ws, d), call)
        assert run.step is not None  # set by a walk that returned
        return result, run.step.deployment

    async def _admit(self, req: ChatRequest, ctx: CallContext,
                     plan: RoutePlan) -> tuple[Admission, RoutePlan]:
        """Budgets and rate limits: refuse (raise) before any upstream attempt."""
        if self.limiter is None:
            return Admission(None), plan
        return await self.limiter.admit(req, ctx, plan)

    async def complete(self, req: ChatRequest, ctx: CallContext) -> tuple[ChatResponse, CallInfo]:
        req = _with(req, stream=False)
        return await self._call(req, ctx, lambda ep: get_adapter(ep.wire).complete(
            ep, _with(req, model=ep.model)))

    async def embed(self, req: EmbeddingRequest,
                    ctx: CallContext) -> tuple[EmbeddingResponse, CallInfo]:
        """Vectors, admitted, failed over and metered as :meth:`complete`; ``auto`` is one
        model (``gateway/embeddings.py``)."""
        if req.model == "auto":
            ws = await self._workspace(ctx.workspace_id)
            req = replace(req, model=auto_model(ws.deployments) or "auto")
        return await self._call(req, ctx, lambda ep: get_adapter(ep.wire).embed(
            ep, _with(req, model=ep.model)))

    async def _call(self, req: ChatRequest | EmbeddingRequest, ctx: CallContext,
                    call: Callable[[Endpoint], Awaitable[_R]]) -> tuple[_R, CallInfo]:
        if tracing.TRACER is None:  # traces off: this check is all they cost
            return await self._serve(req, ctx, call)
        operation = "embeddings" if isinstance(req, EmbeddingRequest) else "chat"
        return await tracing.TRACER.call(operation, req.model, ctx, self._serve(req, ctx, call))

    async def _serve(self, req: ChatRequest | EmbeddingRequest, ctx: CallContext,
                     call: Callable[[Endpoint], Awaitable[_R]]) -> tuple[_R, CallInfo]:
        """One non-stream call: plan, admit, walk the plan, settle and meter."""
        plan, ws = await self._plan(req, ctx)
        admission, plan = await self._admit(req, ctx, plan)
        run = Attempt(ctx, deadline=time.perf_counter() + self.config.deadline_s)
        try:
            resp, dep = await self._walk(plan, ws, run, call)
        except BaseException as exc:
            if isinstance(exc, ProviderError):
                self._spend(failure_row(ctx, run.attempts, exc))
            if admission.active:
                await shielded(admission.release())  # a failed call is never charged
            raise
        upstream_ms = run.upstream_s * 1000
        await self._record(dep, None, upstream_ms)
        self._used(dep)
        info = self._info(dep, run, resp.usage, ws)
        await admission.settle(info.cost_usd, resp.usage, dep)
        info.rate = admission.rate
        committed = self._spend(spend_row(ctx, info, "ok",
                                          latency_ms=(time.perf_counter() - ctx.started) * 1000))
        if committed is not None:
            await asyncio.shield(committed)
        return resp, info

    async def open_stream(self, req: ChatRequest, ctx: CallContext) -> GatewayStream:
        if tracing.TRACER is None:
            return await self._open_stream(req, ctx)
        return await tracing.TRACER.open_stream(req.model, ctx, self._open_stream(req, ctx))

    async def _open_stream(self, req: ChatRequest, ctx: CallContext) -> GatewayStream:
        plan, ws = await self._plan(req, ctx)
        admission, plan = await self._admit(req, ctx, plan)
        run = Attempt(ctx, deadline=time.perf_counter() + self.config.deadline_s)
        req = _with(req, stream=True)

        async def start(ep: Endpoint) -> tuple[AsyncIterator[StreamEvent], list[StreamEvent]]:
            # A stream counts as started at its first token: until then it may fail over.
            events = get_adapter(ep.wire).stream(ep, _with(req, model=ep.model))
            head: list[StreamEvent] = []
            try:
                async for event in events:
                    head.append(event)
                    if isinstance(event, _CONTENT_EVENTS):
                        break
            except BaseException:
                await aclose_events(events)
                raise
            return events, head

        try:
            (events, head), dep = await self._walk(plan, ws, run, start)
        except BaseException as exc:
            if isinstance(exc, ProviderError):
                self._spend(failure_row(ctx, run.attempts, exc))
            if admission.active:
                await shielded(admission.release())
            raise
        self._used(dep)
        info = self._info(dep, run, Usage(), ws, cost=False)
        info.ttft_ms = (time.perf_counter() - ctx.started) * 1000
        info.rate = admission.rate
        return GatewayStream(
            dep, info, events, head, record=self._record, admission=admission, trace=ctx.trace,
            price=lambda usage: self.cost(dep, usage, ws),
            prompt_tokens=lambda: admission.prompt_tokens or estimate_tokens(req),
            meter=lambda info, status: self._spend(spend_row(
                ctx, info, status, latency_ms=(time.perf_counter() - ctx.started) * 1000)),
        )

    async def count_tokens(self, req: ChatRequest, ctx: CallContext) -> tuple[int, bool, Deployment]:
        """Input tokens of ``req`` at the deployment it would go to first:
        ``(count, exact, deployment)``; exact from an upstream that counts (Anthropic's
        ``count_tokens``), else Warden's estimate. Nothing is billed or metered."""
        plan, ws = await self._plan(req, ctx)
        dep = plan.steps[0].deployment  # plan_route raises rather than plan nothing
        ep = self._endpoint(ws, dep)
        try:
            counted = await get_adapter(ep.wire).count_tokens(ep, _with(req, model=ep.model))
        except ProviderError as exc:  # counting is advisory: an estimate beats an error
            log.info("count_tokens on %s failed (%s): estimating", dep.id, exc.code)
            counted = None
        if counted is not None:
            return counted, True, dep
        return estimate_tokens(req), False, dep

    def _used(self, dep: Deployment) -> None:
        if self._on_used is not None and dep.credential_id is not None:
            self._on_used(dep.credential_id)

    # --- metering -------------------------------------------------------------

    def _info(self, dep: Deployment, run: Attempt, usage: Usage, ws: _Workspace, *,
              cost: bool = True) -> CallInfo:
        overhead = (time.perf_counter() - run.ctx.started - run.upstream_s) * 1000
        info = CallInfo(dep.provider, dep.model, dep.id, dep.credential_id, run.attempts, None,
                        round(max(overhead, 0.0), 3), usage)
        if cost:
            info.cost_usd = self.cost(dep, usage, ws)
        info.fallback, info.cost_factor = run.fallback, run.cost_factor
        run.ctx.served = info  # for the access log
        return info

    def cost(self, dep: Deployment, usage: Usage, ws: _Workspace) -> Decimal | None:
        return self.catalog.cost(dep.provider, dep.model, usage, ws.overrides.get(dep.id))

    # --- listing --------------------------------------------------------------

    async def list_models(self, workspace_id: str) -> list[dict[str, Any]]:
        ws = await self._workspace(workspace_id)
        groups = await self._groups(workspace_id)
        out: list[dict[str, Any]] = [{"id": "auto", "owned_by": "warden", "kind": "router"}]
        out += [{"id": name, "owned_by": "warden", "kind": "group", "members": members}
                for name, members in sorted(groups.items())]
        seen: set[str] = set()
        for dep in ws.deployments:
            if dep.name in seen:
                continue
            seen.add(dep.name)
            out.append({"id": dep.name, "owned_by": dep.provider, "kind": "model",
                        **dep.info.to_dict()})
        return out


def _with(req: _Req, **changes: Any) -> _Req:
    """``req`` with ``changes``: itself when it has them already (a request is never
    changed in place; ``dataclasses.replace`` costs ~7 µs, a few times a call)."""
    if all(getattr(req, name) == value for name, value in changes.items()):
        return req
    return replace(req, **changes)


def _native_only(deployments: list[Deployment], req: ChatRequest) -> list[Deployment]:
    """Without the deployments that cannot honour the fields only the client's own
    wire format serves (``Native.required``)."""
    native = req.native
    if native is None or not native.required:
        return deployments
    return [d for d in deployments if getattr(PROVIDERS.get(d.provider), "wire", None) == native.wire]


def _unsupported(req: ChatRequest) -> InvalidRequest | None:
    """The 400 for a request whose model reaches no deployment of the format its fields need."""
    native = req.native
    if native is None or not native.required:
        return None
    return InvalidRequest(f"{', '.join(native.required)}: only an {native.wire} deployment can serve "
                          f"this, and model '{req.model}' reaches none", param=native.required[0],
                          code="unsupported_field")


def _same_objects(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """The credential source hands out the same objects until something changes."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
