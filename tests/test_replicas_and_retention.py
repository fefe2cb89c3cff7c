"""Several collectors on one database, and retention: periodic work held by one replica at a time
(leases), and old months reported from round summaries with the same figures as from raw results."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from collector import migrate, store
from collector.config import parse_config
from collector.db import Result, RoundSummary
from collector.reporting import report_from_db
from collector.service import CollectorState

AGENTS = ("a1", "a2", "a3")


def config(database_url: str, **extra):
    return parse_config({
        "database_url": database_url,
        "ingest": {"max_result_age": "1d"},
        "retention": {"raw": "2d"},
        "agents": [{"id": a, "token": f"token-{a}-0123456789"} for a in AGENTS],
        "checks": [{"name": "transit", "type": "icmp", "host": "127.0.0.1", "interval": 60}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["transit"]}],
        **extra,
    }, "test")


async def test_only_one_replica_holds_a_lease_and_another_takes_over_when_it_expires(database_url) -> None:
    await __import__("asyncio").to_thread(migrate.upgrade, database_url)
    one, two = CollectorState.create(config(database_url)), CollectorState.create(config(database_url))
    try:
        now = datetime.now(timezone.utc)
        assert await one.hold_lease("evaluation", now, ttl=10) is True
        assert await two.hold_lease("evaluation", now, ttl=10) is False
        assert await one.hold_lease("evaluation", now + timedelta(seconds=5), ttl=10) is True  # renewal
        # `one` dies: nobody renews; once the lease expires, `two` takes it and `one` can't
        later = now + timedelta(seconds=16)
        assert await two.hold_lease("evaluation", later, ttl=10) is True
        assert await one.hold_lease("evaluation", later + timedelta(seconds=1), ttl=10) is False
        await two.release_leases()
        assert await one.hold_lease("evaluation", later + timedelta(seconds=2), ttl=10) is True
    finally:
        await one.engine.dispose()
        await two.engine.dispose()


async def test_old_months_report_the_same_from_round_summaries_as_from_raw_results(database_url) -> None:
    await __import__("asyncio").to_thread(migrate.upgrade, database_url)
    state = CollectorState.create(config(database_url))
    policy = state.policies["sla"]
    rnd = random.Random(7)
    start = datetime(2026, 10, 3, 9, 0, tzinfo=timezone.utc)
    rows: dict[str, list[dict]] = {a: [] for a in AGENTS}
    for minute in range(240):
        slot = start + timedelta(minutes=minute)
        outage = 30 <= minute < 62 or 150 <= minute < 160
        for agent in AGENTS:
            for attempt in range(rnd.choice((1, 1, 2))):  # some slots have two attempts: the first vote stands
                ok = not outage and not (agent == "a1" and rnd.random() < 0.3)  # one flaky vantage point
                rows[agent].append({"result_id": f"{agent}-{minute}-{attempt}", "check": "transit", "slot": slot,
                                    "started": slot, "ok": ok, "latency_ms": None, "status_code": None,
                                    "error": None if ok else "timeout", "detail": None, "received_at": slot})
    try:
        await state.sync_config()
        async with state.sessionmaker() as session:
            for agent, batch in rows.items():
                await store.insert_results(session, agent, batch)
            await session.commit()
            from_raw = await report_from_db(session, policy, "2026-10", now=datetime(2026, 11, 25, tzinfo=timezone.utc))
        removed = await state.expire_raw_results()
        assert removed == sum(1 for b in rows.values() for r in b if r["result_id"].endswith("-0"))
        async with state.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Result)) == 0
            assert await session.scalar(select(func.count()).select_from(RoundSummary)) == 240
            from_summaries = await report_from_db(session, policy, "2026-10", now=datetime(2026, 11, 25, tzinfo=timezone.utc))
        assert from_raw["outages"] and [(o["start"], o["end"]) for o in from_raw["outages"]] == [
            ("2026-10-03T09:30:00Z", "2026-10-03T10:02:00Z"), ("2026-10-03T11:30:00Z", "2026-10-03T11:40:00Z")]
        assert from_summaries == from_raw
    finally:
        await state.engine.dispose()


def test_raw_retention_must_outlast_the_ingest_age_limit() -> None:
    import pytest

    from collector.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config({"ingest": {"max_result_age": "40d"}, "retention": {"raw": "30d"}}, "cfg")
    assert "retention.raw: must be longer than ingest.max_result_age" in str(err.value)
