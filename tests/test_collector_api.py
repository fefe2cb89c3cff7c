"""The collector's HTTP API against a real aiohttp server and a real SQLite database."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collector.app import create_app
from collector.config import parse_config
from collector.service import CollectorState

TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789", "a3": "token-a3-0123456789"}
INTERVAL = 60


def make_state(database_url: str, **extra) -> CollectorState:
    config = parse_config(
        {
            "database_url": database_url,
            "evaluation": {"interval": "1h", "grace": "5s"},
            "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
            "checks": [
                {"name": "web", "type": "http", "interval": INTERVAL, "url": "http://127.0.0.1:1/",
                 "timeout": "5s", "outage": {"quorum": "all", "min_duration": "2m"}},
            ],
            **extra,
        },
        "test",
    )
    return CollectorState.create(config)


def base_slot() -> datetime:
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=2)
    return start.replace(minute=0, second=0, microsecond=0)


def result(slot: datetime, ok: bool, check: str = "web") -> dict:
    return {
        "id": uuid.uuid4().hex,
        "check": check,
        "slot": slot.isoformat(),
        "started": (slot + timedelta(milliseconds=15)).isoformat(),
        "ok": ok,
        "latency_ms": 3.2 if ok else None,
        "status_code": 200 if ok else None,
        "error": None if ok else "connect",
    }


def auth(agent: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[agent]}"}


@pytest.fixture
async def api(database_url, aiohttp_client):
    state = make_state(database_url)
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def post(client, agent: str, results: list[dict], **kw):
    return await client.post("/api/v1/results", json={"agent": agent, "results": results}, headers=auth(agent), **kw)


async def test_all_agents_failing_long_enough_opens_exact_window(api) -> None:
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(6)]
    failing = {1, 2, 3}
    for agent in TOKENS:
        resp = await post(api, agent, [result(s, i not in failing) for i, s in enumerate(slots)])
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"accepted": 6, "duplicates": 0}
    await api.state.evaluator.tick()
    body = await (await api.get("/api/v1/outages", params={"policy": "web"})).json()
    assert [(w["start"], w["end"]) for w in body["outages"]] == [
        (slots[1].isoformat().replace("+00:00", "Z"), slots[4].isoformat().replace("+00:00", "Z"))
    ]
    assert body["outages"][0]["minutes"] == 3
    assert body["outages"][0]["open"] is False


async def test_one_agent_failing_never_opens_a_window(api) -> None:
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(10)]
    for agent in TOKENS:
        await post(api, agent, [result(s, agent != "a1") for s in slots])
    await api.state.evaluator.tick()
    body = await (await api.get("/api/v1/outages")).json()
    assert body["outages"] == []


async def test_two_failed_rounds_do_not_reach_a_three_minute_rule_but_three_do(database_url, aiohttp_client) -> None:
    state = make_state(database_url, checks=[
        {"name": "web", "type": "http", "interval": INTERVAL, "url": "http://127.0.0.1:1/",
         "timeout": "5s", "outage": {"quorum": "all", "min_duration": "3m"}}])
    client = await aiohttp_client(create_app(state))
    s0 = base_slot()
    for agent in TOKENS:
        await post(client, agent, [result(s0 + timedelta(minutes=i), i not in (1, 2)) for i in range(5)])
        await post(client, agent, [result(s0 + timedelta(minutes=i), i not in (6, 7, 8)) for i in range(5, 10)])
    await state.evaluator.tick()
    body = await (await client.get("/api/v1/outages")).json()
    assert [w["start"] for w in body["outages"]] == [(s0 + timedelta(minutes=6)).isoformat().replace("+00:00", "Z")]


async def test_replayed_batch_is_stored_once(api) -> None:
    batch = [result(base_slot() + timedelta(minutes=i), True) for i in range(3)]
    first = await post(api, "a1", batch)
    again = await post(api, "a1", batch)
    assert await first.json() == {"accepted": 3, "duplicates": 0}
    assert await again.json() == {"accepted": 0, "duplicates": 3}
    metrics = await (await api.get("/metrics")).text()
    assert 'uptime_collector_results_total{outcome="duplicate"} 3.0' in metrics
    assert 'uptime_collector_results_total{outcome="accepted"} 3.0' in metrics


async def test_late_results_change_the_verdict_of_past_rounds(api) -> None:
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(5)]
    for agent in ("a1", "a2"):
        await post(api, agent, [result(s, False) for s in slots])
    await api.state.evaluator.tick()
    # a3 has not reported: the rounds are UNKNOWN, never an outage and never up.
    assert (await (await api.get("/api/v1/outages")).json())["outages"] == []
    await post(api, "a3", [result(s, False) for s in reversed(slots)])
    await api.state.evaluator.tick()
    windows = (await (await api.get("/api/v1/outages")).json())["outages"]
    assert [(w["start"], w["minutes"]) for w in windows] == [(slots[0].isoformat().replace("+00:00", "Z"), 5)]


async def test_metrics_show_last_probe_per_check_and_agent(api) -> None:
    s0 = base_slot()
    await post(api, "a1", [result(s0, True), result(s0 + timedelta(minutes=1), False)])
    text = await (await api.get("/metrics")).text()
    assert 'uptime_collector_probe_success{agent="a1",check="web"} 0.0' in text
    assert 'uptime_collector_outage_open{policy="web"}' in text
    assert "uptime_collector_agent_last_seen_timestamp_seconds{agent=\"a1\"}" in text


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (lambda b: b["results"][0].update(slot="2026-11-01T00:00:00"), 422, "results[0].slot"),
        (lambda b: b["results"][0].update(check="nope"), 422, "results[0].check: unknown check 'nope'"),
        (lambda b: b["results"][0].update(ok="yes"), 422, "results[0].ok"),
        (lambda b: b["results"][0].update(error="boom"), 422, "results[0].error"),
        (lambda b: b["results"][0].update(extra=1), 422, "results[0].extra: unknown field"),
        (lambda b: b["results"][0].update(slot="2999-01-01T00:00:00Z"), 422, "lies in the future"),
        (lambda b: b.update(agent="a2"), 403, "this token belongs to 'a1', not 'a2'"),
        (lambda b: b.pop("results"), 422, "results: Field required"),
        (lambda b: b["results"][1].update(detail="a\x00b"), 422, "results[1].detail: contains a NUL character"),
        (lambda b: b["results"][0].update(started="2999-01-01T00:00:00Z"), 422, "results[0].started: 2999-01-01T00:00:00+00:00 lies in the future"),
        (lambda b: b["results"][0].update(started="2026-01-01T00:00:00Z"), 422, "results[0].started: 2026-01-01T00:00:00+00:00 lies before its slot"),
    ],
)
async def test_bad_batches_are_refused_whole_with_the_field_named(api, mutate, status, message) -> None:
    body = {"agent": "a1", "results": [result(base_slot() + timedelta(minutes=1), True), result(base_slot(), True)]}
    mutate(body)
    resp = await api.post("/api/v1/results", json=body, headers=auth("a1"))
    assert resp.status == status
    assert message in (await resp.json())["error"]
    # nothing of a refused batch is stored
    ok = await post(api, "a1", [result(base_slot() + timedelta(minutes=30), True)])
    assert (await ok.json())["accepted"] == 1
    text = await (await api.get("/metrics")).text()
    assert 'uptime_collector_results_total{outcome="accepted"} 1.0' in text


async def test_tokens_and_bodies(api) -> None:
    body = {"agent": "a1", "results": [result(base_slot(), True)]}
    assert (await api.post("/api/v1/results", json=body)).status == 401
    bad = await api.post("/api/v1/results", json=body, headers={"Authorization": "Bearer wrong-token-000000"})
    assert bad.status == 401
    not_json = await api.post("/api/v1/results", data=b"{nope", headers=auth("a1"))
    assert not_json.status == 400
    assert "not JSON" in (await not_json.json())["error"]
    gz = await api.post("/api/v1/results", data=gzip.compress(json.dumps(body).encode()),
                        headers={**auth("a1"), "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert gz.status == 200
    assert (await gz.json())["accepted"] == 1


async def test_oversized_body_is_refused(tmp_path, aiohttp_client) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}", max_body_bytes=2048)
    client = await aiohttp_client(create_app(state))
    body = {"agent": "a1", "results": [result(base_slot() + timedelta(minutes=i), True) for i in range(40)]}
    resp = await client.post("/api/v1/results", json=body, headers=auth("a1"))
    assert resp.status == 413


async def test_assignments_with_etag(api) -> None:
    resp = await api.get("/api/v1/assignments", headers=auth("a2"))
    assert resp.status == 200
    body = await resp.json()
    assert body["agent"] == "a2"
    assert [c["name"] for c in body["checks"]] == ["web"]
    assert "outage" not in body["checks"][0]
    again = await api.get("/api/v1/assignments", headers={**auth("a2"), "If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


async def test_bad_query_parameters_get_400(api) -> None:
    resp = await api.get("/api/v1/outages", params={"since": "yesterday"})
    assert resp.status == 400
    assert "'since'" in (await resp.json())["error"]
    resp = await api.get("/api/v1/outages", params={"policy": "nope"})
    assert resp.status == 404
    resp = await api.get("/api/v1/reports/web", params={"period": "2026-13"})
    assert resp.status == 400
    assert "period" in (await resp.json())["error"]


ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


@pytest.fixture
async def admin_api(tmp_path, aiohttp_client):
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}", admin_token="admin-token-0123456789",
                       rate_limit={"requests_per_second": 1, "burst": 3},
                       policies=[{"name": "sla", "preset": "nexcess", "components": ["web"]}])
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def test_registered_agent_can_ship_until_revoked(admin_api) -> None:
    assert (await admin_api.post("/api/v1/agents", json={"id": "a9"})).status == 401
    resp = await admin_api.post("/api/v1/agents", json={"id": "a9"}, headers=ADMIN)
    assert resp.status == 201
    token = (await resp.json())["token"]
    body = {"agent": "a9", "results": [result(base_slot(), True)]}
    ok = await admin_api.post("/api/v1/results", json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200
    assert (await admin_api.delete("/api/v1/agents/a9", headers=ADMIN)).status == 200
    body = {"agent": "a9", "results": [result(base_slot() + timedelta(minutes=1), True)]}
    refused = await admin_api.post("/api/v1/results", json=body, headers={"Authorization": f"Bearer {token}"})
    assert refused.status == 401
    agents = (await (await admin_api.get("/api/v1/agents")).json())["agents"]
    assert {"id": "a9", "active": False} == {k: v for k, v in next(a for a in agents if a["id"] == "a9").items() if k in ("id", "active")}


async def test_rate_limit_answers_429_and_counts_it(admin_api) -> None:
    codes = []
    for i in range(6):
        resp = await post(admin_api, "a1", [result(base_slot() + timedelta(minutes=i), True)])
        codes.append(resp.status)
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]
    assert "Retry-After" in resp.headers or codes[-1] == 200
    text = await (await admin_api.get("/metrics")).text()
    assert 'uptime_collector_ingest_rejections_total{reason="rate_limit"}' in text


async def test_maintenance_is_announced_and_judged_in_the_report(admin_api) -> None:
    # recorded now, for tomorrow: Nexcess scheduled maintenance recorded by its start is compliant
    start = (datetime.now(timezone.utc) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    m = {"policy": "sla", "kind": "scheduled", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(),
         "note": "switch upgrade"}
    assert (await admin_api.post("/api/v1/maintenance", json=m)).status == 401
    resp = await admin_api.post("/api/v1/maintenance", json=m, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    bad = await admin_api.post("/api/v1/maintenance", json={**m, "kind": "normal"}, headers=ADMIN)
    assert bad.status == 422
    assert "accepts no maintenance of kind 'normal'" in (await bad.json())["error"]
    listed = (await (await admin_api.get("/api/v1/maintenance", params={"policy": "sla"})).json())["maintenance"]
    assert [x["start"] for x in listed] == [start.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert listed[0]["recorded_by"] == "api" and listed[0]["cancelled"] is False
    report = await (await admin_api.get("/api/v1/reports/sla", params={"period": f"{start:%Y-%m}"})).json()
    assert report["maintenance"][0]["compliant"] is True
    assert report["maintenance"][0]["notice"]["rule"] == "by_start"


async def test_heartbeat_records_clock_offset_and_flags_skew(admin_api) -> None:
    resp = await admin_api.post("/api/v1/heartbeat", json={"agent": "a2", "clock_offset_seconds": 7.5}, headers=auth("a2"))
    assert resp.status == 200
    assert "server_time" in await resp.json()
    text = await (await admin_api.get("/metrics")).text()
    assert 'uptime_collector_agent_clock_offset_seconds{agent="a2"} 7.5' in text
    assert 'uptime_collector_agent_clock_skewed{agent="a2"} 1.0' in text
    agents = {a["id"]: a for a in (await (await admin_api.get("/api/v1/agents")).json())["agents"]}
    assert (agents["a2"]["clock_offset_seconds"], agents["a2"]["clock_skewed"]) == (7.5, True)
    assert agents["a1"]["clock_skewed"] is False


async def test_gzip_bomb_is_refused_without_inflating_it(tmp_path, aiohttp_client) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}", max_body_bytes=64 * 1024)
    client = await aiohttp_client(create_app(state))
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")  # 50 MB of JSON whitespace, ~50 KB
    assert len(bomb) < 64 * 1024
    resp = await client.post("/api/v1/results", data=bomb,
                             headers={**auth("a1"), "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert resp.status == 413
    assert "larger than 65536 bytes" in (await resp.json())["error"]


async def test_a_rotated_or_revoked_token_stays_so_across_a_restart(tmp_path, aiohttp_client) -> None:
    """Replacing a stolen token must survive a restart of any replica while the config is unchanged."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"
    first = await aiohttp_client(create_app(make_state(url, admin_token="admin-token-0123456789")))
    resp = await first.post("/api/v1/agents", json={"id": "a1"}, headers=ADMIN)  # a new token for a1
    assert resp.status in (200, 201), await resp.text()
    new_token = (await resp.json())["token"]
    assert (await first.delete("/api/v1/agents/a2", headers=ADMIN)).status == 200
    await first.close()

    again = await aiohttp_client(create_app(make_state(url, admin_token="admin-token-0123456789")))
    slot = base_slot()
    stolen = await post(again, "a1", [result(slot, True)])
    assert stolen.status == 401  # the config's old token stays replaced
    fresh = await again.post("/api/v1/results", json={"agent": "a1", "results": [result(slot, True)]},
                             headers={"Authorization": f"Bearer {new_token}"})
    assert fresh.status == 200, await fresh.text()
    assert (await post(again, "a2", [result(slot, True)])).status == 401  # still revoked
    await again.close()

    # a new token written into the config is a rotation there: it wins
    rotated = {**TOKENS, "a2": "token-a2-rotated-0123"}
    state = CollectorState.create(parse_config({
        "database_url": url, "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in rotated.items()],
        "checks": [{"name": "web", "type": "http", "interval": INTERVAL, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
    }, "test"))
    third = await aiohttp_client(create_app(state))
    resp = await third.post("/api/v1/results", json={"agent": "a2", "results": [result(slot, True)]},
                            headers={"Authorization": "Bearer token-a2-rotated-0123"})
    assert resp.status == 200, await resp.text()


async def test_a_refusal_names_every_result_at_fault_with_its_reason(api) -> None:
    s0 = base_slot()
    good = [result(s0 + timedelta(minutes=i), True) for i in range(4)]
    future = {**result(s0, True), "slot": "2999-01-01T00:00:00Z"}
    unknown = result(s0, True, check="nope")
    resp = await post(api, "a1", [good[0], future, good[1], unknown, good[2]])
    assert resp.status == 422
    body = await resp.json()
    assert [(r["index"], r["id"], r["reason"]) for r in body["rejected"]] == [
        (1, future["id"], "future"), (3, unknown["id"], "unknown_check")]
    assert body["rejected"][1]["error"] == "results[3].check: unknown check 'nope'"
    assert body["error"].startswith("results[1].slot: 2999-01-01T00:00:00+00:00 lies in the future")
    assert "and 1 more results refused" in body["error"]
    # nothing of it is stored: the good ones come again, without the culprits, and are stored once
    again = await post(api, "a1", good)
    assert await again.json() == {"accepted": 4, "duplicates": 0}
    text = await (await api.get("/metrics")).text()
    assert 'uptime_collector_results_refused_total{reason="future"} 1.0' in text
    assert 'uptime_collector_results_refused_total{reason="unknown_check"} 1.0' in text
    assert 'uptime_collector_ingest_rejections_total{reason="invalid"} 1.0' in text
    assert 'uptime_collector_ingest_requests_total{code="422"} 1.0' in text
    assert 'uptime_collector_ingest_requests_total{code="200"} 1.0' in text


async def test_schema_faults_name_the_results_at_fault(api) -> None:
    s0 = base_slot()
    batch = [result(s0, True), {**result(s0, True), "ok": "yes"}, result(s0, True)]
    resp = await post(api, "a1", batch)
    assert resp.status == 422
    body = await resp.json()
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "schema")]
    text = await (await api.get("/metrics")).text()
    assert 'uptime_collector_ingest_rejections_total{reason="schema"} 1.0' in text


@pytest.mark.parametrize(("data", "headers", "status", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, {}, 400, "nested too deeply"),
    (b'{"agent": "a1", "results": []}', {"Authorization": "Bearer t\xc3\xa9st"}, 401, "unknown or revoked token"),
])
async def test_hostile_bodies_and_headers_get_a_4xx(api, data, headers, status, message) -> None:
    resp = await api.post("/api/v1/results", data=data, headers={**auth("a1"), **headers})
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]


async def test_a_non_ascii_admin_token_is_refused_not_a_server_error(admin_api) -> None:
    resp = await admin_api.post("/api/v1/agents", json={"id": "zz"}, headers={"Authorization": "Bearer adm\xc3\xafn"})
    assert resp.status == 401


async def test_private_reads_cover_metrics_too(tmp_path, aiohttp_client) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}", admin_token="admin-token-0123456789",
                       public_reads=False)
    client = await aiohttp_client(create_app(state))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=ADMIN)).status == 200


async def test_last_contact_survives_a_restart(tmp_path, aiohttp_client) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}"
    first = await aiohttp_client(create_app(make_state(url)))
    beat = await first.post("/api/v1/heartbeat", json={"agent": "a3", "clock_offset_seconds": 0.25}, headers=auth("a3"))
    assert beat.status == 200
    await first.close()
    again = await aiohttp_client(create_app(make_state(url)))
    text = await (await again.get("/metrics")).text()
    assert 'uptime_collector_agent_last_seen_timestamp_seconds{agent="a3"}' in text
    assert 'uptime_collector_agent_clock_offset_seconds{agent="a3"} 0.25' in text
    assert 'agent="a1"' not in text.split("uptime_collector_agent_last_seen_timestamp_seconds")[-1].split("# HELP")[0]


async def test_admin_calls_without_a_configured_admin_token_say_so(tmp_path, aiohttp_client) -> None:
    state = make_state(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}")  # no admin_token
    client = await aiohttp_client(create_app(state))
    for method, path in (("POST", "/api/v1/agents"), ("PUT", "/api/v1/checks/x"), ("DELETE", "/api/v1/maintenance/1")):
        resp = await client.request(method, path, json={}, headers={"Authorization": "Bearer whatever-0123456789"})
        assert resp.status == 401, path
        assert "no admin_token is configured on this collector" in (await resp.json())["error"], path
