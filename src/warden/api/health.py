"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from warden.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = await services.readiness()
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks,
            "backends": services.backends()}
    if not ready:  # e.g. ["state (redis)"]: which dependency to look at
        body["down"] = [f"{name} ({services.backends()[name]})"
                        for name, v in checks.items() if v != "ok"]
    return JSONResponse(body, status_code=200 if ready else 503)
