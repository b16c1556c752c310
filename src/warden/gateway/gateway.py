"""The gateway: plan a route, walk it with retries, breakers and failover, and
meter every request in exact dollars.

It knows nothing of HTTP frameworks, agents or governance: the API layer and
the agent runtime both call :meth:`Gateway.complete` / :meth:`Gateway.open_stream`.
Credentials and model groups come from injected sources, so this module only
depends on the layers below it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

from warden.errors import ServiceUnavailable
from warden.gateway.catalog import Catalog, ModelOverride
from warden.gateway.errors import BadRequest, ContentFiltered, ContextTooLong, ProviderError, Timeout
from warden.gateway.health import HealthTracker
from warden.gateway.context import CallContext
from warden.gateway.limits import Admission, Limiter
from warden.gateway.metering import CallInfo, failure_row, spend_row
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.routing import RoutePlan, plan_route
from warden.gateway.deployment import Deployment
from warden.gateway.stream import GatewayStream, aclose_events, shielded
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
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

# Errors that say nothing about the deployment's health: the request was at fault.
_REQUEST_FAULTS = (BadRequest, ContentFiltered, ContextTooLong)
_CONTENT_EVENTS = (TextDelta, ReasoningDelta, ToolCallDelta, FinishEvent)
_NAMED_LIMIT = 1_000  # cached deployments for uncatalogued names, per workspace


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
SpendSink = Callable[[dict[str, Any]], None]
UsedSink = Callable[[str], None]


@dataclass(slots=True)
class GatewayConfig:
    max_retries: int = 2  # extra tries on the same deployment for a retryable error
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 5.0  # a longer retry-after moves on to the next deployment
    deadline_s: float = 300.0  # whole request, all attempts included
    timeouts: Timeouts = field(default_factory=Timeouts)


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


@dataclass(slots=True)
class _Attempt:
    """Bookkeeping of one request's walk over its plan."""

    ctx: CallContext
    attempts: int = 0
    upstream_s: float = 0.0
    last_error: ProviderError | None = None
    deadline: float = 0.0


class Gateway:
    def __init__(self, *, credentials: CredentialSource, groups: GroupSource, state: StateStore,
                 catalog: Catalog, spend: SpendSink, config: GatewayConfig | None = None,
                 on_credential_used: UsedSink | None = None, limiter: Limiter | None = None) -> None:
        self._credentials = credentials
        self.limiter = limiter  # budgets and rate limits; None: unmetered (tests, embedders)
        self._on_used = on_credential_used
        self._groups = groups
        self.state = state
        self.catalog = catalog
        self._spend = spend
        self.config = config or GatewayConfig()
        self.health = HealthTracker()
        self._workspaces: dict[str, _Workspace] = {}

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

    async def _plan(self, req: ChatRequest, ctx: CallContext) -> tuple[RoutePlan, _Workspace]:
        ws = await self._workspace(ctx.workspace_id)
        groups = await self._groups(ctx.workspace_id)
        deployments = self._with_named(ws, [req.model, *ctx.options.fallbacks])
        open_ids = await self._open_breakers(deployments)
        health = self.health.snapshot((d.id for d in deployments), open_ids)
        plan = plan_route(req, deployments, groups=groups, health=health, options=ctx.options,
                          catalog=self.catalog)
        return plan, ws

    async def _open_breakers(self, deployments: Sequence[Deployment]) -> dict[str, bool]:
        try:
            states = await self.state.breaker_states(d.id for d in deployments)
        except StateUnavailable:
            return {}  # ranking without breaker hints beats refusing the request
        return {dep_id: s != "closed" for dep_id, s in states.items() if s != "closed"}

    # --- calling --------------------------------------------------------------

    def _endpoint(self, ws: _Workspace, dep: Deployment) -> Endpoint:
        return ws.credentials[dep.credential_id or ""].endpoint(dep.model, self.config.timeouts)

    async def _may_try(self, dep: Deployment) -> bool:
        try:
            return await self.state.breaker_allow(dep.id)
        except StateUnavailable:
            return True

    async def _record(self, dep: Deployment, error: ProviderError | None, latency_ms: float) -> None:
        healthy = error is None or isinstance(error, _REQUEST_FAULTS)
        self.health.record(dep.id, healthy, latency_ms if error is None else None)
        try:
            await self.state.breaker_record(dep.id, healthy)
        except StateUnavailable:
            pass

    def _backoff(self, retry: int, error: ProviderError) -> float | None:
        """Seconds to wait before retrying on the same deployment, or None to move on."""
        if not error.retryable or retry >= self.config.max_retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.config.retry_after_cap_s else None
        ceiling = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2**retry)
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter"

    async def _walk(self, plan: RoutePlan, ws: _Workspace, run: _Attempt,
                    call: Callable[[Endpoint], Awaitable[Any]]) -> tuple[Any, Deployment]:
        """Try each step of the plan (with bounded retries) until ``call`` succeeds."""
        for step in plan.steps:
            dep = step.deployment
            if not await self._may_try(dep):
                continue
            ep = self._endpoint(ws, dep)
            retry = 0
            while True:
                remaining = run.deadline - time.perf_counter()
                if remaining <= 0:
                    raise run.last_error or Timeout("the request's deadline passed",
                                                    code="deadline_exceeded")
                run.attempts += 1
                t0 = time.perf_counter()
                try:
                    # A timeout scope, not wait_for: no extra task per attempt.
                    async with asyncio.timeout(remaining):
                        result = await call(ep)
                except TimeoutError:
                    error: ProviderError = Timeout("the request's deadline passed",
                                                   provider=dep.provider)
                except ProviderError as exc:
                    error = exc
                else:
                    elapsed = time.perf_counter() - t0
                    run.upstream_s += elapsed
                    return result, dep
                run.upstream_s += time.perf_counter() - t0
                run.last_error = error
                await self._record(dep, error, 0.0)
                log.info("attempt %d on %s failed: %s %s", run.attempts, dep.id,
                         type(error).__name__, error.code)
                if not error.failover and not error.retryable:
                    raise error
                wait = self._backoff(retry, error)
                if wait is None or time.perf_counter() + wait >= run.deadline:
                    break
                retry += 1
                await asyncio.sleep(wait)
        if run.last_error is not None:
            raise run.last_error
        raise ServiceUnavailable(
            "every deployment for this request is unavailable (circuit breakers open)",
            code="no_available_deployment",
        )

    async def _admit(self, req: ChatRequest, ctx: CallContext,
                     plan: RoutePlan) -> tuple[Admission, RoutePlan]:
        """Budgets and rate limits: refuse (raise) before any upstream attempt."""
        if self.limiter is None:
            return Admission(None), plan
        return await self.limiter.admit(req, ctx, plan)

    async def complete(self, req: ChatRequest, ctx: CallContext) -> tuple[ChatResponse, CallInfo]:
        plan, ws = await self._plan(req, ctx)
        admission, plan = await self._admit(req, ctx, plan)
        run = _Attempt(ctx, deadline=time.perf_counter() + self.config.deadline_s)
        req = replace(req, stream=False)
        try:
            resp, dep = await self._walk(
                plan, ws, run, lambda ep: get_adapter(ep.wire).complete(ep, replace(req, model=ep.model))
            )
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
        self._spend(spend_row(ctx, info, "ok", latency_ms=(time.perf_counter() - ctx.started) * 1000))
        return resp, info

    async def open_stream(self, req: ChatRequest, ctx: CallContext) -> GatewayStream:
        plan, ws = await self._plan(req, ctx)
        admission, plan = await self._admit(req, ctx, plan)
        run = _Attempt(ctx, deadline=time.perf_counter() + self.config.deadline_s)
        req = replace(req, stream=True)

        async def start(ep: Endpoint) -> tuple[AsyncIterator[StreamEvent], list[StreamEvent]]:
            # A stream counts as started at its first token: until then it may fail over.
            events = get_adapter(ep.wire).stream(ep, replace(req, model=ep.model))
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
            dep, info, events, head, record=self._record, admission=admission,
            price=lambda usage: self.cost(dep, usage, ws),
            meter=lambda info, status: self._spend(spend_row(
                ctx, info, status, latency_ms=(time.perf_counter() - ctx.started) * 1000)),
        )

    def _used(self, dep: Deployment) -> None:
        if self._on_used is not None and dep.credential_id is not None:
            self._on_used(dep.credential_id)

    # --- metering -------------------------------------------------------------

    def _info(self, dep: Deployment, run: _Attempt, usage: Usage, ws: _Workspace, *,
              cost: bool = True) -> CallInfo:
        overhead = (time.perf_counter() - run.ctx.started - run.upstream_s) * 1000
        info = CallInfo(dep.provider, dep.model, dep.id, dep.credential_id, run.attempts, None,
                        round(max(overhead, 0.0), 3), usage)
        if cost:
            info.cost_usd = self.cost(dep, usage, ws)
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


def _same_objects(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """The credential source hands out the same objects until something changes."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
