"""Request bodies read within a budget, for the services that listen (`serve`, `ml-backend`).

The declared length is checked before a byte is read, and the bytes are counted as they arrive:
a body that claims less than it sends, or claims nothing, is cut at the budget all the same.
JSON is parsed only once its size is known, and refused when nested past what any honest
client sends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.errors import quoted
from core.settings import json_depth

MAX_JSON_DEPTH = 32
# A photo of 25 MB arrives in seconds on a slow phone line; a body still arriving after this is
# a client holding the connection open.
BODY_DEADLINE_S = 60.0


class Refused(Exception):
    """A request refused before its work: the status and the reason it is answered with."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.reason}, status_code=self.status, headers=self.headers)


async def read_body(request: Request, limit: int, what: str = "the body") -> bytes:
    """The request's body, at most `limit` bytes within BODY_DEADLINE_S; raises Refused (413 past
    the size, 408 past the time: a client sending a byte at a time holds a connection no longer)."""
    declared = request.headers.get("content-length") or "0"
    if not declared.isascii() or not declared.isdigit():
        raise Refused(400, f"a Content-Length that is no length: {quoted(declared, 40)}")
    if int(declared) > limit:
        raise Refused(413, f"{what} is {int(declared):,} bytes; at most {limit:,} are read")
    try:
        return await asyncio.wait_for(_read(request, limit, what), BODY_DEADLINE_S)
    except TimeoutError as exc:
        raise Refused(408, f"{what} did not arrive whole within {BODY_DEADLINE_S:g} s") from exc


async def _read(request: Request, limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise Refused(413, f"{what} is over {limit:,} bytes")
    return bytes(data)


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, within `limit` bytes and MAX_JSON_DEPTH levels; raises Refused (400, 413)."""
    data = await read_body(request, limit, "the JSON body")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Refused(400, f"the body is not JSON: {quoted(exc, 120)}") from exc
    if json_depth(value) > MAX_JSON_DEPTH:
        raise Refused(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value
