"""A result's details on the wire (docs/wire-protocol.md, "Details"): every new field validated
with a message naming it, `degraded` and `failed_step` consistent with `ok`, and everything stored
with the result and read back, on SQLite and PostgreSQL, through the real POST /api/v1/results."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from collector import migrate, store
from collector.app import create_app
from collector.config import parse_config
from collector.db import Agent, Result, make_engine, make_sessionmaker
from collector.errors import RequestError
from collector.ingest import check_batch, parse_batch
from protocol.timestamps import rfc3339
from protocol.wire import ERROR_REASONS

UTC = timezone.utc
TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}


def base_slot() -> datetime:
    return (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def result(slot: datetime | None = None, **fields) -> dict:
    slot = slot or base_slot()
    return {"id": uuid.uuid4().hex, "check": "web", "slot": rfc3339(slot),
            "started": rfc3339(slot + timedelta(milliseconds=15)), "ok": True, "latency_ms": 12.5, **fields}


EVERY_DETAIL = {
    "degraded": True,
    "phases": {"dns": 0.004, "connect": 0.012, "tls": 0.031, "first_byte": -0.0, "transfer": 2},
    "final_url": "https://example.test/login?next=%2F",
    "redirects": 2,
    "cert_not_after": "2027-03-01T12:00:00+01:00",
    "rcode": "NOERROR",
    "answers": ["192.0.2.10", "2001:db8::10"],
    "steps": [
        {"name": "login page", "ok": True, "error": None, "detail": None, "status_code": 200, "latency_ms": 120.5},
        {"name": "sign in", "ok": True, "status_code": 302, "latency_ms": -0.0},
    ],
    "scheduled": "2026-12-01T10:00:00.250Z",
}


def test_new_error_reasons_are_accepted():
    assert {"expect", "cert_expiry", "rcode", "answer", "assertion"} <= set(ERROR_REASONS)
    for reason in ("expect", "cert_expiry", "rcode", "answer", "assertion"):
        batch = parse_batch({"agent": "a1", "results": [result(ok=False, error=reason)]})
        assert batch.results[0].error == reason


def test_every_detail_may_be_absent_or_null():
    nulls = {name: None for name in ("degraded", "phases", "final_url", "redirects", "cert_not_after", "rcode",
                                     "answers", "steps", "failed_step", "scheduled")}
    batch = parse_batch({"agent": "a1", "results": [result(), result(**nulls)]})
    rows = check_batch(batch, {"web"}, datetime.now(UTC))
    assert [(r["degraded"], r["extra"]) for r in rows] == [(False, None), (False, None)]


# field, bad value, what the message must say (after "results[0].")
BAD_VALUES = [
    ("degraded", "yes", "degraded: Input should be a valid boolean"),
    ("degraded", 1, "degraded: Input should be a valid boolean"),
    ("phases", [1, 2], "phases: Input should be a valid dictionary"),
    ("phases", {"DNS": 0.1}, "phases.DNS.[key]: String should match pattern '^[a-z_]+$'"),
    ("phases", {"dns-lookup": 0.1}, "phases.dns-lookup.[key]: String should match pattern"),
    ("phases", {"a" * 33: 0.1}, f"phases.{'a' * 33}.[key]: String should have at most 32 characters"),
    ("phases", {"dns": -1}, "phases.dns: Input should be greater than or equal to 0"),
    ("phases", {"dns": 3601}, "phases.dns: Input should be less than or equal to 3600"),
    ("phases", {"dns": "0.1"}, "phases.dns"),
    ("phases", {f"p_{chr(97 + i)}": 0.1 for i in range(17)}, "phases: Dictionary should have at most 16 items"),
    ("final_url", "x" * 2001, "final_url: String should have at most 2000 characters"),
    ("final_url", 5, "final_url: Input should be a valid string"),
    ("redirects", 101, "redirects: Input should be less than or equal to 100"),
    ("redirects", -1, "redirects: Input should be greater than or equal to 0"),
    ("redirects", 1.5, "redirects: Input should be a valid integer"),
    ("cert_not_after", "2027-03-01T12:00:00", "cert_not_after: Input should have timezone info"),
    ("cert_not_after", "next year", "cert_not_after: Input should be a valid datetime"),
    ("rcode", "X" * 17, "rcode: String should have at most 16 characters"),
    ("answers", "192.0.2.1", "answers: Input should be a valid list"),
    ("answers", ["a"] * 51, "answers: List should have at most 50 items"),
    ("answers", ["x" * 501], "answers[0]: String should have at most 500 characters"),
    ("answers", [7], "answers[0]: Input should be a valid string"),
    ("steps", [{"name": "s", "ok": True}] * 11, "steps: List should have at most 10 items"),
    ("steps", [{"ok": True}], "steps[0].name: Field required"),
    ("steps", [{"name": "s", "ok": "true"}], "steps[0].ok: Input should be a valid boolean"),
    ("steps", [{"name": "n" * 129, "ok": True}], "steps[0].name: String should have at most 128 characters"),
    ("steps", [{"name": "s", "ok": False, "error": "nope"}], "steps[0].error: Input should be 'dns'"),
    ("steps", [{"name": "s", "ok": True, "detail": "d" * 501}], "steps[0].detail: String should have at most 500"),
    ("steps", [{"name": "s", "ok": True, "status_code": 99}], "steps[0].status_code: Input should be greater than"),
    ("steps", [{"name": "s", "ok": True, "latency_ms": -1}], "steps[0].latency_ms: Input should be greater than"),
    ("steps", [{"name": "s", "ok": True, "extra": 1}], "steps[0].extra: unknown field"),
    ("failed_step", "f" * 129, "failed_step: String should have at most 128 characters"),
    ("scheduled", "2026-12-01 10:00", "scheduled: Input should have timezone info"),
    ("scheduled", 1764583200, "scheduled: expected an RFC 3339 timestamp string"),
    ("cert_not_after", 1764583200.5, "cert_not_after: expected an RFC 3339 timestamp string"),
]


@pytest.mark.parametrize("field, value, message", BAD_VALUES, ids=[f"{f}-{i}" for i, (f, _v, _m) in enumerate(BAD_VALUES)])
def test_a_bad_detail_is_refused_as_schema_naming_the_field(field, value, message):
    good = result()
    with pytest.raises(RequestError) as err:
        parse_batch({"agent": "a1", "results": [good, result(**{field: value})]})
    assert err.value.status == 422
    [rejected] = err.value.extra["rejected"]
    assert rejected["index"] == 1 and rejected["reason"] == "schema"
    assert rejected["error"].startswith(f"results[1].{message}"), rejected["error"]


@pytest.mark.parametrize("fields, message", [
    ({"ok": False, "error": "timeout", "degraded": True},
     "results[0].degraded: a failed result is not degraded (degraded means ok but slow)"),
    ({"ok": True, "failed_step": "sign in"}, "results[0].failed_step: a successful result has no failed step"),
])
def test_details_that_contradict_ok_are_inconsistent(fields, message):
    batch = parse_batch({"agent": "a1", "results": [result(**fields)]})
    with pytest.raises(RequestError) as err:
        check_batch(batch, {"web"}, datetime.now(UTC))
    assert [(r["reason"], r["error"]) for r in err.value.extra["rejected"]] == [("inconsistent", message)]


def make_state(database_url: str):
    from collector.service import CollectorState
    return CollectorState.create(parse_config({
        "database_url": database_url,
        "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
    }, "test"))


@pytest.fixture
async def api(database_url, aiohttp_client):
    state = make_state(database_url)
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def post(client, agent: str, results: list[dict]):
    return await client.post("/api/v1/results", json={"agent": agent, "results": results},
                             headers={"Authorization": f"Bearer {TOKENS[agent]}"})


async def test_a_batch_with_every_detail_is_stored_and_read_back(api) -> None:
    s0 = base_slot()
    slow = result(s0, **EVERY_DETAIL)
    journey = result(s0 + timedelta(minutes=1), ok=False, latency_ms=None, error="assertion",
                     detail="body lacks 'Welcome'", failed_step="sign in",
                     steps=[{"name": "login page", "ok": True, "status_code": 200, "latency_ms": 80},
                            {"name": "sign in", "ok": False, "error": "assertion", "detail": "body lacks 'Welcome'",
                             "status_code": 200, "latency_ms": 95.5}])
    plain = result(s0 + timedelta(minutes=2))
    resp = await post(api, "a1", [slow, journey, plain])
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 3, "duplicates": 0}

    async with api.state.sessionmaker() as session:
        rows = (await session.execute(select(Result.result_id, Result.degraded, Result.extra)
                                      .order_by(Result.slot))).all()
    assert [(r.result_id, r.degraded) for r in rows] == [(slow["id"], True), (journey["id"], False), (plain["id"], False)]
    assert rows[0].extra == {
        "phases": {"dns": 0.004, "connect": 0.012, "tls": 0.031, "first_byte": 0.0, "transfer": 2},
        "final_url": "https://example.test/login?next=%2F",
        "redirects": 2,
        "cert_not_after": "2027-03-01T11:00:00Z",   # kept in UTC
        "rcode": "NOERROR",
        "answers": ["192.0.2.10", "2001:db8::10"],
        "steps": [
            {"name": "login page", "ok": True, "error": None, "detail": None, "status_code": 200, "latency_ms": 120.5},
            {"name": "sign in", "ok": True, "error": None, "detail": None, "status_code": 302, "latency_ms": 0.0},
        ],
        "scheduled": "2026-12-01T10:00:00.250000Z",
    }
    assert str(rows[0].extra["phases"]["first_byte"]) == "0.0"  # -0.0 has no sign once stored
    assert rows[1].extra["failed_step"] == "sign in" and rows[1].extra["steps"][1]["error"] == "assertion"
    assert rows[2].extra is None  # no details: SQL NULL, not a JSON null

    # the rules see the degraded vote
    async with api.state.sessionmaker() as session:
        observations = await store.load_observations(session, ["web"], s0, s0 + timedelta(minutes=3))
    assert sorted((o.ts, o.ok, o.degraded) for o in observations) == [
        (s0, True, True), (s0 + timedelta(minutes=1), False, False), (s0 + timedelta(minutes=2), True, False)]


async def test_degraded_with_a_failure_is_refused_over_http_and_nothing_is_stored(api) -> None:
    bad = result(ok=False, error="timeout", degraded=True)
    resp = await post(api, "a1", [result(base_slot() + timedelta(minutes=5)), bad])
    assert resp.status == 422
    body = await resp.json()
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "inconsistent")]
    assert "results[1].degraded" in body["error"]
    async with api.state.sessionmaker() as session:
        assert (await session.execute(select(Result.id))).all() == []


async def test_rolled_up_rounds_keep_their_degraded_agents(api) -> None:
    """Raw results past retention become round summaries: a degraded success stays degraded, so a
    report over summaries equals one over the raw results."""
    s0 = base_slot()
    assert (await post(api, "a1", [result(s0, degraded=True), result(s0 + timedelta(minutes=1))])).status == 200
    assert (await post(api, "a2", [result(s0, degraded=True), result(s0 + timedelta(minutes=1), degraded=True)])).status == 200
    async with api.state.sessionmaker() as session:
        before = await store.load_observations(session, ["web"], s0, s0 + timedelta(minutes=2))
        assert await store.roll_up_and_expire(session, s0 + timedelta(minutes=2)) == 4
        await session.commit()
    async with api.state.sessionmaker() as session:
        assert (await session.execute(select(Result.id))).all() == []
        after = await store.load_observations(session, ["web"], s0, s0 + timedelta(minutes=2))
    key = lambda o: (o.ts, o.agent)  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)
    assert sum(o.degraded for o in after) == 3


async def test_results_stored_before_the_details_existed_read_as_not_degraded(database_url) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url, "0007")
    s0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Agent.__table__).values(id="a1", token_sha256=None, created_at=s0))
            await conn.execute(insert(Result.__table__).values(
                result_id="old-1", agent_id="a1", check="web", slot=s0, started=s0, ok=True, latency_ms=None,
                status_code=None, error=None, detail=None, received_at=s0))
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            [row] = (await session.execute(select(Result.result_id, Result.degraded, Result.extra))).all()
    finally:
        await engine.dispose()
    assert tuple(row) == ("old-1", False, None)
