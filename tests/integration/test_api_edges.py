"""What every route shares: the error envelope with its request id (also for a
bug underneath a route), body validation, and bounded metrics labels."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.services import Services


def _odd_405s(text: str) -> float:
    """The counter of 405s for unknown methods on /healthz (metrics are process-wide:
    other tests in this process may have counted some before)."""
    line = 'warden_http_requests_total{method="OTHER",route="/healthz",status="405"} '
    return next((float(row[len(line):]) for row in text.splitlines() if row.startswith(line)), 0.0)


async def test_odd_methods_do_not_grow_metrics(client: httpx.AsyncClient) -> None:
    before = _odd_405s((await client.get("/metrics")).text)
    for i in range(5):
        await client.request(f"X{i:05d}", "/healthz")
    text = (await client.get("/metrics")).text
    assert 'method="X00001"' not in text
    assert _odd_405s(text) == before + 5


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_non_positive_max_tokens_is_422(client: httpx.AsyncClient, field: str) -> None:
    r = await client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "x"}], field: -5})
    assert assert_envelope(r, 422, "validation_error")["param"] == field


async def test_a_bug_still_answers_in_the_envelope_with_the_request_id(services: Services) -> None:
    async with client_for(services) as c:
        # A broken dependency underneath a route: its error must not reach the client.
        services.model_groups.list = None  # type: ignore[assignment,method-assign]
        r = await c.get("/api/model-groups", headers={"x-request-id": "req-bug-1"})
    err = assert_envelope(r, 500, "internal_error")
    assert err["request_id"] == "req-bug-1" == r.headers["x-request-id"]
    assert "NoneType" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/keys", "GET, POST"),  # two routes share the path: both methods are named
    ("PATCH", "/api/sessions", "GET, POST"),
    ("DELETE", "/v1/chat/completions", "POST"),
    ("POST", "/healthz", "GET"),
])
async def test_405_names_every_allowed_method(client: httpx.AsyncClient, method: str, path: str,
                                              allow: str) -> None:
    r = await client.request(method, path)
    assert_envelope(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


async def test_openapi_lists_the_gateway_routes_with_their_bodies(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, model in (("/v1/chat/completions", "ChatCompletionBody"), ("/v1/messages", "MessagesBody")):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert "messages" in schema["components"]["schemas"][model]["properties"]
    assert schema["components"]["schemas"]["ErrorEnvelope"]["required"] == ["error"]


async def test_docs_work_offline(client: httpx.AsyncClient) -> None:
    """Swagger UI is served from files shipped with Warden: no CDN in the page."""
    page = (await client.get("/docs")).text
    assert "cdn." not in page and "/docs/assets/swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = await client.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 100_000


async def test_openapi_declares_every_request_body(client: httpx.AsyncClient) -> None:
    """Each POST/PUT/PATCH that takes a body says so, with the model it validates."""
    schema = (await client.get("/openapi.json")).json()
    bodiless = {("/api/byok/{cred_id}/test", "post"),  # acts on the stored credential only
                ("/api/webhooks/{webhook_id}/test", "post")}  # sends a test event to the stored hook
    missing = [(path, method) for path, ops in schema["paths"].items() for method, op in ops.items()
               if method in ("post", "put", "patch") and "requestBody" not in op
               and (path, method) not in bodiless]
    assert missing == []
    ref = schema["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "message" in schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]


async def test_the_schema_states_the_rules_the_server_applies(client: httpx.AsyncClient) -> None:
    """Found by schemathesis' positive_data_acceptance: each rule below was checked by the
    server but missing from /openapi.json, so schema-valid requests got 422."""
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    import re

    name = schema["WorkspaceCreate"]["properties"]["name"]["pattern"]
    assert re.match(name, "team-a.1") and not re.match(name, "équipe")
    r = await client.post("/api/workspaces", json={"name": "équipe"})  # isalnum() used to accept it
    assert assert_envelope(r, 422, "validation_error")["param"] == "name"

    members = schema["GroupBody"]["properties"]["members"]
    assert members["uniqueItems"] is True and re.match(members["items"]["pattern"], "openai/gpt-4o")
    assert not re.match(members["items"]["pattern"], "nosuch/gpt-4o")

    effort = schema["ChatCompletionBody"]["properties"]["reasoning_effort"]["enum"]
    assert "xhigh" in effort and None in effort and "huge" not in effort

    # Another workspace's id as a workspace budget's scope: not found, as for keys and agents.
    r = await client.put("/api/budgets", json={"scope": "workspace", "scope_id": "ws_someone_else",
                                              "limit_usd": 1})
    assert_envelope(r, 404, "workspace_not_found")

    # A key's or an agent's budget names it: the schema requires scope_id for those scopes.
    budget = schema["BudgetSpec"]
    assert budget["if"]["properties"]["scope"]["enum"] == ["key", "agent"]
    assert budget["then"]["required"] == ["scope_id"]
    r = await client.put("/api/budgets", json={"scope": "key", "limit_usd": "0"})
    assert assert_envelope(r, 422, "validation_error")["param"] == "scope_id"

    # A tool result names its call, a legacy function result its function.
    rules = {rule["if"]["properties"]["role"]["const"]: rule["then"] for rule in schema["_MessageIn"]["allOf"]}
    assert rules["tool"]["required"] == ["tool_call_id"] and rules["function"]["required"] == ["name"]
    assert rules["tool"]["properties"]["tool_call_id"]["minLength"] == 1
    r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "tool"}]})
    assert assert_envelope(r, 422, "validation_error")["param"] == "messages.0.tool_call_id"

    effort = schema["_Reasoning"]["properties"]["effort"]["enum"]
    assert "xhigh" in effort and None in effort and "" not in effort
    r = await client.post("/v1/responses", json={"model": "auto", "input": "hi", "reasoning": {"effort": ""}})
    assert assert_envelope(r, 422, "validation_error")["param"] == "reasoning.effort"

    # JSON Schema's integer includes 662.0: the server takes a whole float as that integer
    # (true, "5" and 5.5 stay refused; see tests/integration/test_api_number_ranges.py).
    token_ids = schema["EmbeddingsBody"]["properties"]["input"]["anyOf"][2]["items"]
    assert token_ids == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    r = await client.post("/v1/embeddings", json={"model": "auto", "input": [59055, 662.0]})
    assert assert_envelope(r, 400, "no_eligible_deployment")["param"] == "model"
    ws = (await client.get("/api/budgets")).json()["workspace_id"]
    r = await client.put(f"/api/workspaces/{ws}/limits", json={"tpm_limit": 50841.0, "rpm_limit": None})
    assert r.status_code == 200 and r.json()["tpm_limit"] == 50841
    r = await client.post("/api/route/explain", json={"prompt": "x", "max_tokens": 16.0})
    assert assert_envelope(r, 400, "no_eligible_deployment")["param"] == "model"  # planned, not refused

    # A json_schema response format carries its schema, on both OpenAI APIs.
    chat_format, responses_format = schema["_ResponseFormatIn"], schema["_Format"]
    assert chat_format["if"]["properties"]["type"]["const"] == "json_schema"
    assert chat_format["then"]["properties"]["json_schema"]["required"] == ["schema"]
    assert responses_format["then"]["required"] == ["schema"]
    r = await client.post("/v1/responses", json={"model": "auto", "input": "hi",
                                                 "text": {"format": {"type": "json_schema"}}})
    assert assert_envelope(r, 422, "validation_error")["param"] == "text.format.schema"

    # Feedback is about exactly one message, one run or one governed call.
    targets = schema["FeedbackBody"]["oneOf"]
    assert [t["required"] for t in targets] == [["message_id"], ["run_id"], ["action_id"]]
    r = await client.post("/api/feedback", json={"rating": "up"})
    assert assert_envelope(r, 422, "validation_error")["param"] == "body"

    assert "openai" in schema["CredentialCreate"]["properties"]["provider"]["enum"]  # what /api/providers lists
    r = await client.post("/api/byok", json={"provider": "nosuch", "api_key": "sk-x"})
    assert assert_envelope(r, 422, "validation_error")["param"] == "provider"


async def test_tool_choice_and_base_url_are_published_as_checked(client: httpx.AsyncClient) -> None:
    import re

    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
    chat = schema["ChatCompletionBody"]["properties"]["tool_choice"]["anyOf"]
    assert {"enum": ["auto", "none", "required"]} in chat
    r = await client.post("/v1/chat/completions", json={"model": "auto", "tool_choice": {},
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "tool_choice.function.name"
    url = next(v for k, v in schema.items() if k.startswith("CredentialCreate"))["properties"]["base_url"]
    pattern = next(b["pattern"] for b in url.get("anyOf", [url]) if "pattern" in b)
    assert re.match(pattern, "http://127.0.0.1:11434/v1") and not re.match(pattern, "")
