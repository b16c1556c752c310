"""Walking a plan: bounded retries and failover that do not hammer a dead host.

Two kinds of breaker live in the shared state store (so every instance agrees):
one per deployment (opened by repeated failures of that model) and one per
*endpoint*, the host and credential a deployment is called through. A failure
that says the host cannot be reached at all (``ProviderError.endpoint_level``:
refused, DNS, TLS, connect timeout) trips the endpoint's breaker at once, for
``endpoint_cooldown_s``: every deployment on it is skipped by this request and
ranked last by the next ones. Once the cooldown is over the breaker is
half-open: the deployments are ranked in their normal place again and the state
store lets exactly one request through as the probe; a success closes it.

One request makes at most ``endpoint_max_attempts`` attempts on one endpoint and
``max_attempts`` over the whole plan, retries included; a failure carries the
count (``ProviderError.attempts``, in the error envelope).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from warden.errors import ServiceUnavailable
from warden.gateway.context import CallContext
from warden.gateway.deployment import Deployment
from warden.gateway.errors import BadRequest, ContentFiltered, ContextTooLong, ProviderError, Timeout
from warden.gateway.health import HealthTracker
from warden.gateway.routing import PlanStep, RoutePlan
from warden.gateway.types import Endpoint
from warden.state.base import StateStore, StateUnavailable

log = logging.getLogger("warden.gateway")
_R = TypeVar("_R")

# Errors that say nothing about the deployment's health: the request was at fault.
REQUEST_FAULTS = (BadRequest, ContentFiltered, ContextTooLong)
_WORST = {"closed": 0, "half_open": 1, "open": 2}


class Bounds(Protocol):
    """What the walk reads of the gateway's configuration."""

    max_retries: int
    backoff_base_s: float
    backoff_cap_s: float
    retry_after_cap_s: float
    max_attempts: int
    endpoint_max_attempts: int
    endpoint_cooldown_s: float


def endpoint_key(dep: Deployment, ep: Endpoint) -> str:
    """The breaker key of the host and credential ``dep`` is called through."""
    return f"ep:{dep.credential_id or dep.provider}@{urlsplit(ep.base_url).netloc}"


@dataclass(slots=True)
class Attempt:
    """Bookkeeping of one request's walk over its plan."""

    ctx: CallContext
    attempts: int = 0
    upstream_s: float = 0.0
    last_error: ProviderError | None = None
    deadline: float = 0.0
    step: PlanStep | None = None  # the step that answered
    fallback: bool = False  # ... not the plan's first choice
    cost_factor: float | None = None  # ... pricier than the first choice, by this factor
    per_endpoint: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # endpoints this request found unreachable


class Failover:
    def __init__(self, state: StateStore, health: HealthTracker, bounds: Bounds) -> None:
        self.state = state
        self.health = health
        self.bounds = bounds

    async def breakers(self, deployments: Iterable[Deployment],
                       endpoint_of: Callable[[Deployment], str]) -> dict[str, str]:
        """Each deployment's worse breaker (its own, its endpoint's) when not closed."""
        deps = list(deployments)
        keys = {d.id: endpoint_of(d) for d in deps}
        try:
            states: Mapping[str, str] = await self.state.breaker_states([*keys, *set(keys.values())])
        except StateUnavailable:
            return {}  # ranking without breaker hints beats refusing the request
        out: dict[str, str] = {}
        for dep_id, ep in keys.items():
            worst = max(states.get(dep_id, "closed"), states.get(ep, "closed"), key=_WORST.__getitem__)
            if worst != "closed":
                out[dep_id] = worst
        return out

    async def _allow(self, key: str) -> bool:
        try:
            return await self.state.breaker_allow(key)
        except StateUnavailable:
            return True

    async def record(self, dep: Deployment, error: ProviderError | None, latency_ms: float) -> None:
        """A deployment's outcome (a host that cannot be reached is the endpoint's, not its)."""
        healthy = error is None or isinstance(error, REQUEST_FAULTS)
        self.health.record(dep.id, healthy, latency_ms if error is None else None)
        try:
            await self.state.breaker_record(dep.id, healthy)
        except StateUnavailable:
            pass

    async def _endpoint(self, key: str, reached: bool) -> None:
        try:
            if reached:
                await self.state.breaker_record(key, True)  # closes a half-open endpoint
            else:
                await self.state.breaker_trip(key, self.bounds.endpoint_cooldown_s)
        except StateUnavailable:
            pass

    def backoff(self, retry: int, error: ProviderError) -> float | None:
        """Seconds to wait before retrying on the same deployment, or None to move on."""
        b = self.bounds
        if not error.retryable or retry >= b.max_retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= b.retry_after_cap_s else None
        ceiling = min(b.backoff_cap_s, b.backoff_base_s * 2**retry)
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter"

    def _spent(self, run: Attempt, key: str) -> bool:
        """Has this request used up its attempts on ``key`` or over the plan?"""
        return (run.attempts >= self.bounds.max_attempts
                or run.per_endpoint.get(key, 0) >= self.bounds.endpoint_max_attempts)

    async def walk(self, plan: RoutePlan, run: Attempt, endpoint_of: Callable[[Deployment], Endpoint],
                   key_of: Callable[[Deployment], str], call: Callable[[Endpoint], Awaitable[_R]]) -> _R:
        """Try each step of the plan (with bounded retries) until ``call`` succeeds;
        ``run.step`` is then the step that answered."""
        try:
            return await self._walk(plan, run, endpoint_of, key_of, call)
        except ProviderError as exc:
            exc.attempts = run.attempts
            exc.headers.setdefault("x-warden-attempts", str(run.attempts))
            raise

    async def _walk(self, plan: RoutePlan, run: Attempt, endpoint_of: Callable[[Deployment], Endpoint],
                    key_of: Callable[[Deployment], str], call: Callable[[Endpoint], Awaitable[_R]]) -> _R:
        for step in plan.steps:
            dep = step.deployment
            key = key_of(dep)
            if run.attempts >= self.bounds.max_attempts:
                break
            if key in run.down or self._spent(run, key):
                continue
            if not await self._allow(key) or not await self._allow(dep.id):
                continue
            ep = endpoint_of(dep)
            retry = 0
            while True:
                remaining = run.deadline - time.perf_counter()
                if remaining <= 0:
                    raise run.last_error or Timeout("the request's deadline passed",
                                                    code="deadline_exceeded")
                run.attempts += 1
                run.ctx.attempts = run.attempts
                run.per_endpoint[key] = run.per_endpoint.get(key, 0) + 1
                t0 = time.perf_counter()
                trace = run.ctx.trace  # the request's span while tracing is on
                span = None if trace is None else trace.attempt(dep, run.attempts, ep.base_url)
                try:
                    # A timeout scope, not wait_for: no extra task per attempt.
                    async with asyncio.timeout(remaining):
                        result = await call(ep)
                except TimeoutError:
                    error: ProviderError = Timeout("the request's deadline passed",
                                                   provider=dep.provider)
                except ProviderError as exc:
                    error = exc
                except BaseException as exc:  # cancelled, or a bug: the span still ends
                    if span is not None:
                        span.ended(exc)
                    raise
                else:
                    if span is not None:
                        span.ended(None)
                    run.upstream_s += time.perf_counter() - t0
                    run.step = step
                    run.fallback, run.cost_factor = fallback_of(plan, step)
                    if step.health.probe:  # this request was the probe: close what was half-open
                        await self._endpoint(key, True)
                        self.health.recovered(dep.id)
                    return result
                run.upstream_s += time.perf_counter() - t0
                if span is not None:
                    span.ended(error)
                run.last_error = error
                log.info("attempt %d on %s failed: %s %s", run.attempts, dep.id,
                         type(error).__name__, error.code)
                if error.endpoint_level:  # the host is down: so is every model behind it
                    run.down.add(key)
                    await self._endpoint(key, False)
                    break
                if step.health.probe:  # an answer, if a failed one: the host is reachable
                    await self._endpoint(key, True)
                await self.record(dep, error, 0.0)
                if not error.failover and not error.retryable:
                    raise error
                wait = self.backoff(retry, error)
                if wait is None or self._spent(run, key) or time.perf_counter() + wait >= run.deadline:
                    break
                retry += 1
                await asyncio.sleep(wait)
        if run.last_error is not None:
            raise run.last_error
        guard = plan.cost_guard
        held = (f"; the cost guard held back {guard.excluded} pricier fallback(s) (more than "
                f"{guard.max_factor:g}x the first choice: see warden.max_fallback_cost_factor)"
                if guard is not None and guard.excluded else "")
        raise ServiceUnavailable(
            "every deployment for this request is unavailable (circuit breakers open)" + held,
            code="no_available_deployment",
        )


def fallback_of(plan: RoutePlan, step: PlanStep) -> tuple[bool, float | None]:
    """Whether ``step`` is a fallback (not the plan's first choice), and how many
    times the first choice's estimated cost it is when that is more."""
    first = plan.cost_guard.reference if plan.cost_guard is not None else plan.steps[0].deployment.id
    if step.deployment.id == first:
        return False, None
    factor = step.cost_factor
    return True, factor if factor is not None and factor > 1 else None
