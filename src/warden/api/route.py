"""``POST /api/route/explain``: the routing plan for a request, with reasons."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool, model_validator

from warden.api.deps import PrincipalDep, ServicesDep
from warden.errors import PositiveInt32
from warden.gateway.context import CallContext
from warden.gateway.context import RouteOptions
from warden.gateway.types import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolSpec,
)

router = APIRouter(prefix="/api/route", tags=["routing"])


class ExplainBody(BaseModel):
    model: str = Field(default="auto", min_length=1, max_length=256)
    prompt: str = Field(min_length=1, max_length=1_000_000)
    system: str | None = None
    tools: StrictBool = False
    image: StrictBool = False
    json_schema: StrictBool = False
    max_tokens: PositiveInt32 | None = None
    warden: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _strip(self) -> ExplainBody:
        self.model = self.model.strip()
        return self


def build_request(body: ExplainBody) -> ChatRequest:
    """A request shaped like the one described, for planning only (never sent)."""
    user = Message("user", [TextPart(body.prompt)])
    if body.image:
        user.content.append(ImagePart(url="https://example.invalid/image.png"))
    messages = [Message.text("system", body.system)] if body.system else []
    return ChatRequest(
        model=body.model,
        messages=[*messages, user],
        tools=[ToolSpec("tool", "a tool the request offers")] if body.tools else [],
        response_format=ResponseFormat("json_schema", {"type": "object"}) if body.json_schema else None,
        max_tokens=body.max_tokens,
    )


@router.post("/explain")
async def explain(body: ExplainBody, request: Request, principal: PrincipalDep,
                  services: ServicesDep) -> dict[str, Any]:
    ctx = CallContext(principal.workspace_id, principal.key_id, request.state.request_id,
                      RouteOptions.from_dict(body.warden))
    plan = await services.gateway.plan(build_request(body), ctx)
    return plan.to_dict()
