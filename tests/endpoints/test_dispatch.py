"""The ASGI stack: hot routes reached before Starlette, their errors answered in OpenAI's shape."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_gateway.errors import InvalidRequestError
from otel_gateway.http._dispatch import GatewayApp


class Endpoint:
    """A plain ASGI endpoint doing what its request's path says."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        action = scope["path"].rsplit("/", 1)[1]
        if action == "invalid":
            raise InvalidRequestError("bad field", param="x", code="invalid_value")
        if action == "crash":
            raise RuntimeError("a bug")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-route", scope["route"].path.encode())]})
        if action == "cut":
            raise RuntimeError("a bug after the answer started")
        await send({"type": "http.response.body", "body": b"ok"})


class Tagging:
    """Front middleware: marks the scope, to show it runs for hot and other routes alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["tagged"] = True
        await self.app(scope, receive, send)


async def other(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"starlette tagged={request.scope.get('tagged')}")


def app() -> GatewayApp:
    endpoint = Endpoint()
    hot = [Route(f"/hot/{action}", endpoint, methods=["POST"]) for action in ("ok", "invalid", "crash", "cut")]
    return GatewayApp(front=[Middleware(Tagging)], hot=hot, routes=[*hot, Route("/other", other)])


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://gw")


async def test_a_hot_route_is_answered_with_its_route_in_the_scope(client: httpx.AsyncClient) -> None:
    response = await client.post("/hot/ok")
    assert (response.status_code, response.headers["x-route"], response.text) == (200, "/hot/ok", "ok")


async def test_other_paths_and_methods_go_through_starlette(client: httpx.AsyncClient) -> None:
    assert (await client.get("/other")).text == "starlette tagged=True"
    assert (await client.get("/hot/ok")).status_code == 405


async def test_a_gateway_error_becomes_its_openai_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/hot/invalid")
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "bad field", "type": "invalid_request_error",
                                         "param": "x", "code": "invalid_value"}}


async def test_a_bug_is_logged_and_answered_500_without_a_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="otel_gateway.http"):
        response = await client.post("/hot/crash")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    assert [record.exc_info[1].args for record in caplog.records if record.exc_info] == [("a bug",)]


async def test_a_bug_after_the_answer_started_is_not_answered_again(client: httpx.AsyncClient) -> None:
    with pytest.raises(RuntimeError, match="after the answer started"):
        await client.post("/hot/cut")
