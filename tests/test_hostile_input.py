"""Hostile bodies on every endpoint that reads one: broken or unknown Content-Encoding, text that is
not UTF-8, numbers JSON does not have or Python cannot convert, tokens outside ASCII. Each is a 4xx
that names the problem (never a 500), and nothing of it is stored."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import pytest

from collector.app import create_app
from collector.config import parse_config
from collector.service import CollectorState

TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT = {"Authorization": f"Bearer {TOKENS['a1']}"}


def make_state(database_url: str) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "evaluation": {"interval": "1h", "status_interval": "1d"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/"}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
    }, "test"))


@pytest.fixture
async def api(database_url, aiohttp_client):
    client = await aiohttp_client(create_app(make_state(database_url)))
    return client


@pytest.fixture
async def sqlite_api(tmp_path, aiohttp_client):
    return await aiohttp_client(create_app(make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")))


_SLOTS = itertools.count(5)


def result(**fields) -> dict:
    # each result its own slot: an agent votes once a slot
    slot = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=next(_SLOTS))
    return {"id": uuid.uuid4().hex, "check": "web", "slot": slot.isoformat(),
            "started": (slot + timedelta(milliseconds=15)).isoformat(), "ok": True,
            "latency_ms": 3.2, "status_code": 200, "error": None, **fields}


def batch(**fields) -> dict:
    return {"agent": "a1", "results": [result(**fields)]}


# Every endpoint that reads a body, with a body it would accept and the token it needs.
ENDPOINTS = [
    ("POST", "/api/v1/results", AGENT, lambda: batch()),
    ("POST", "/api/v1/heartbeat", AGENT, lambda: {"agent": "a1", "clock_offset_seconds": 0.1}),
    ("PUT", "/api/v1/checks/other", ADMIN, lambda: {"type": "http", "interval": 60, "url": "http://127.0.0.1:1/"}),
    ("PUT", "/api/v1/policies/sla2", ADMIN, lambda: {"preset": "nexcess", "components": ["web"]}),
    ("POST", "/api/v1/maintenance", ADMIN, lambda: {
        "policy": "sla", "kind": "scheduled", "announced": "2026-10-01T00:00:00Z",
        "start": "2026-10-03T10:00:00Z", "end": "2026-10-03T11:00:00Z"}),
    ("POST", "/api/v1/agents", ADMIN, lambda: {"id": "a9"}),
]

BROKEN_ENCODINGS = [
    # (Content-Encoding, body from the JSON bytes, what the answer must name)
    ("gzip", lambda b: b, "not valid gzip"),
    ("gzip", lambda b: gzip.compress(b) + b"trailing bytes", "not valid gzip"),
    ("deflate", lambda b: b"\x78\x9c" + b"\xff" * 20, "not valid deflate"),
    ("snappy", lambda b: b, "Content-Encoding 'snappy' is not supported"),
    ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b)), "Content-Encoding 'gzip, gzip' is not supported"),
]


async def test_a_broken_or_unknown_content_encoding_is_a_400_naming_it_on_every_endpoint(sqlite_api) -> None:
    for method, path, token, body in ENDPOINTS:
        for coding, encode, message in BROKEN_ENCODINGS:
            resp = await sqlite_api.request(method, path, data=encode(json.dumps(body()).encode()),
                                            headers={**token, "Content-Type": "application/json", "Content-Encoding": coding})
            assert resp.status == 400, f"{method} {path} {coding}: {resp.status} {await resp.text()}"
            assert message in (await resp.json())["error"], path
    text = await (await sqlite_api.get("/metrics")).text()
    # counted for the agents' endpoints (results and heartbeat: 5 each)
    assert 'uptime_collector_ingest_rejections_total{reason="encoding"} 10.0' in text
    assert 'uptime_collector_results_total{outcome="accepted"} 0.0' in text


async def test_brotli_and_zstd_bodies_are_refused_or_decoded_never_a_server_error(sqlite_api) -> None:
    for coding in ("br", "zstd"):
        resp = await sqlite_api.post("/api/v1/results", data=b"not compressed at all",
                                     headers={**AGENT, "Content-Encoding": coding})
        assert resp.status == 400
        assert coding in (await resp.text()).lower()  # aiohttp's own 400 without the library, ours with it


async def test_good_gzip_deflate_and_identity_bodies_are_accepted(sqlite_api) -> None:
    for coding, encode in (("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda b: b),
                           ("GZIP", gzip.compress)):
        resp = await sqlite_api.post("/api/v1/results", data=encode(json.dumps(batch()).encode()),
                                     headers={**AGENT, "Content-Encoding": coding})
        assert resp.status == 200, f"{coding}: {await resp.text()}"


@pytest.mark.parametrize(("codec", "message"), [
    ("utf-16", "UTF-16 or UTF-32"),      # with its byte order mark
    ("utf-16-le", "UTF-16 or UTF-32"),   # without one: the NUL bytes give it away
    ("utf-16-be", "UTF-16 or UTF-32"),
    ("utf-32", "UTF-16 or UTF-32"),
    ("latin-1", "invalid continuation byte at byte"),
])
async def test_a_body_that_is_not_utf8_is_refused_and_nothing_stored(api, codec, message) -> None:
    # The body holds an escaped NUL: in UTF-16 the escape's bytes are not the ASCII ones the NUL
    # check looks for, so the body must be refused for its encoding before any of it is decoded.
    body = json.dumps(batch(detail="caf\u00e9 a\x00b"), ensure_ascii=False)
    assert "a\\u0000b" in body
    resp = await api.post("/api/v1/results", data=body.encode(codec),
                          headers={**AGENT, "Content-Type": f"application/json; charset={codec}"})
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert message in error and "RFC 8259" in error
    assert f"charset={codec}" in error
    # the same batch in UTF-8 is refused for its NUL, by field, and the metrics show nothing stored
    resp = await api.post("/api/v1/results", data=body.encode(), headers=AGENT)
    assert resp.status == 422
    assert "results[0].detail: contains a NUL character" in (await resp.json())["error"]
    text = await (await api.get("/metrics")).text()
    assert 'uptime_collector_results_total{outcome="accepted"} 0.0' in text
    assert 'uptime_collector_ingest_rejections_total{reason="not_json"} 1.0' in text


async def test_a_utf8_byte_order_mark_is_ignored(sqlite_api) -> None:
    resp = await sqlite_api.post("/api/v1/results", data=b"\xef\xbb\xbf" + json.dumps(batch()).encode(), headers=AGENT)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 1


@pytest.mark.parametrize(("latency", "status", "message"), [
    ("-1", 422, "results[0].latency_ms: Input should be greater than or equal to 0"),
    ("-1e-300", 422, "results[0].latency_ms: Input should be greater than or equal to 0"),
    ("NaN", 400, "NaN is not a JSON number"),
    ("Infinity", 400, "Infinity is not a JSON number"),
    ("-Infinity", 400, "-Infinity is not a JSON number"),
    ("1e999", 422, "results[0].latency_ms: Input should be less than or equal to 3600000"),  # a float() of inf
    ("1" + "0" * 5000, 400, "number too long at line 1, column "),
])
async def test_a_latency_that_is_not_a_non_negative_number_is_refused(sqlite_api, latency, status, message) -> None:
    body = json.dumps(batch(latency_ms=123456789)).replace("123456789", latency)
    resp = await sqlite_api.post("/api/v1/results", data=body, headers={**AGENT, "Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]
    text = await (await sqlite_api.get("/metrics")).text()
    assert 'uptime_collector_results_total{outcome="accepted"} 0.0' in text


async def test_a_negative_zero_latency_is_stored_as_zero(sqlite_api) -> None:
    resp = await sqlite_api.post("/api/v1/results", data=json.dumps(batch(latency_ms=-0.0)), headers=AGENT)
    assert resp.status == 200, await resp.text()
    text = await (await sqlite_api.get("/metrics")).text()
    assert 'uptime_collector_probe_duration_seconds{agent="a1",check="web"} 0.0' in text


async def test_an_over_long_number_is_a_400_saying_where_on_every_endpoint(sqlite_api) -> None:
    digits = "9" * 5000
    bodies = {
        "/api/v1/results": '{"agent": "a1", "results": [{"status_code": ' + digits + "}]}",
        "/api/v1/heartbeat": '{"agent": "a1",\n "clock_offset_seconds": ' + digits + "}",
        "/api/v1/checks/other": '{"type": "http", "interval": ' + digits + "}",
        "/api/v1/agents": '{"id": -' + digits + "}",
    }
    for method, path, token, _ in ENDPOINTS:
        if path not in bodies:
            continue
        resp = await sqlite_api.request(method, path, data=bodies[path], headers=token)
        assert resp.status == 400, f"{path}: {resp.status} {await resp.text()}"
        error = (await resp.json())["error"]
        assert "number too long" in error and "set_int_max_str_digits" not in error
    resp = await sqlite_api.post("/api/v1/heartbeat", data=bodies["/api/v1/heartbeat"], headers=AGENT)
    assert "at line 2, column 26" in (await resp.json())["error"]
    # fewer digits than Python's limit, more than a float holds: where seconds are read
    for field in ('"interval": ' + "9" * 400, '"interval": 60, "timeout": ' + "9" * 400):
        resp = await sqlite_api.put("/api/v1/checks/other", headers=ADMIN,
                                    data='{"type": "http", "url": "http://127.0.0.1:1/", ' + field + "}")
        assert resp.status == 400, await resp.text()
        assert "number too large" in (await resp.json())["error"]


@pytest.mark.parametrize("token", ["t\u00f6k\u00e9n-0123456789", "\u00ff" * 20, "token-a1-0123456789\u00e9"])
async def test_a_token_outside_ascii_is_a_401_for_agents_and_admin(sqlite_api, token) -> None:
    # aiohttp sends header text as Latin-1; what arrives are bytes outside ASCII
    for method, path, _, body in ENDPOINTS:
        resp = await sqlite_api.request(method, path, json=body(), headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, f"{path}: {resp.status} {await resp.text()}"
    assert (await sqlite_api.get("/api/v1/assignments", headers={"Authorization": f"Bearer {token}"})).status == 401


@pytest.mark.parametrize("body", [b"\x00\x00", b"\x78\x9c", zlib.compress(json.dumps(batch()).encode())[:-6]])
async def test_a_deflate_stream_cut_short_is_a_400_even_when_its_bytes_come_late(sqlite_api, body) -> None:
    """Its last bytes in a packet of their own, aiohttp never ends such a body: answered anyway."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sqlite_api.server.port)
    try:
        writer.write(f"POST /api/v1/results HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer {TOKENS['a1']}\r\n"
                     f"Content-Encoding: deflate\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        answer = await asyncio.wait_for(reader.read(), 30)  # the connection is closed after it
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    assert "not valid deflate data" in json.loads(answer)["error"]
