"""Request bodies read within a budget (core/bodies.py): the size, the depth, and the time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import bodies
from core.bodies import Refused, read_json


async def _echo(request: Request) -> Response:
    try:
        value = await read_json(request, 1_000)
    except Refused as refused:
        return refused.response()
    return JSONResponse({"got": value})


APP = Starlette(routes=[Route("/", _echo, methods=["POST"])])


def _post(content: object, headers: dict[str, str] | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://test") as client:
            return await client.post("/", content=content, headers=headers)  # type: ignore[arg-type]

    return asyncio.run(send())


def test_a_body_within_its_budget_is_read() -> None:
    assert _post(b'{"a": [1, 2]}').json() == {"got": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("content", "headers", "status", "said"),
    [
        (b"x" * 1_001, None, 413, "1,001 bytes; at most 1,000"),
        (b"{}", {"content-length": "abc"}, 400, "no length"),
        (b"[" * 40 + b"]" * 40, None, 400, "nested deeper than 32"),
        (b"\xff\xfe", None, 400, "not JSON"),
    ],
    ids=["too large", "a length that is none", "too deep", "not UTF-8"],
)
def test_a_body_over_its_budget_is_refused_with_a_reason(
    content: bytes, headers: dict[str, str] | None, status: int, said: str
) -> None:
    answer = _post(content, headers)
    assert answer.status_code == status and said in answer.json()["error"]


def test_a_body_that_claims_nothing_and_sends_too_much_is_cut_at_the_budget() -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 100

    answer = _post(endless())  # chunked: no Content-Length to check first
    assert answer.status_code == 413 and "over 1,000 bytes" in answer.json()["error"]


def test_a_body_sent_a_byte_at_a_time_is_cut_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "BODY_DEADLINE_S", 0.5)

    async def dripping() -> AsyncIterator[bytes]:
        for byte in b'{"slow": true}':
            await asyncio.sleep(0.2)
            yield bytes([byte])

    answer = _post(dripping())
    assert answer.status_code == 408 and "did not arrive whole within 0.5 s" in answer.json()["error"]
