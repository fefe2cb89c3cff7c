"""HTTP client for the collector's three endpoints (docs/wire-protocol.md), nothing more.

It reports what the collector answered; deciding what an answer means (retry, reject, back off)
is the caller's job. Connection errors and timeouts are raised as aiohttp/asyncio exceptions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from evidence.canonical import SIGNATURE_HEADER

USER_AGENT = "uptime-agent/0.1"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None  # parsed JSON, or None when the body was not JSON
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def error_message(self) -> str:
        """The collector's {"error": ...}, else the start of whatever it sent."""
        if isinstance(self.body, dict) and "error" in self.body:
            return str(self.body["error"])
        return self.text[:300] or f"HTTP {self.status}"


class CollectorClient:
    def __init__(self, base_url: str, token: str, agent_id: str, *, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={
                "Authorization": f"Bearer {self._token}",
                "User-Agent": f"{USER_AGENT} ({self.agent_id})",
            },
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def results_body(self, results: list[dict[str, Any]]) -> bytes:
        """The bytes POST /api/v1/results sends for `results`: what a batch's signature covers."""
        return _encode({"agent": self.agent_id, "results": results})

    async def post_results(
        self, results: list[dict[str, Any]], *, body: bytes | None = None, signature: str | None = None
    ) -> Reply:
        """POST a batch; `body` is results_body(results) when the caller made it already (to sign
        it), `signature` the value of the Uptime-Batch-Signature header (none: unsigned)."""
        headers = {SIGNATURE_HEADER: signature} if signature is not None else None
        data = body if body is not None else self.results_body(results)
        return await self._request("POST", "/api/v1/results", data=data, headers=headers)

    async def post_heartbeat(self, body: dict[str, Any]) -> Reply:
        return await self._request("POST", "/api/v1/heartbeat", json_body=body)

    async def get_assignments(self, etag: str | None = None) -> Reply:
        headers = {"If-None-Match": etag} if etag else None
        return await self._request("GET", "/api/v1/assignments", headers=headers)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if self._session is None:
            raise RuntimeError("collector client is not open")
        request_headers = dict(headers or {})
        if json_body is not None:
            data = _encode(json_body)
        if data is not None:
            request_headers["Content-Type"] = "application/json"
        async with self._session.request(method, self.base_url + path, data=data, headers=request_headers) as resp:
            text = await resp.text(errors="replace")
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return Reply(resp.status, body, text, {k.lower(): v for k, v in resp.headers.items()})


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
