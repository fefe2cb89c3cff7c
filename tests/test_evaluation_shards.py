"""Evaluation shared by several collectors (issue 11, collector item 10): policies split into
shards by name, each shard's evaluation lease claimed in the database, a fair share per live
collector, a dead collector's shards taken over within the lease ttl."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml

from collector import jobs, migrate
from collector.config import ConfigError, parse_config
from collector.db import make_engine, make_sessionmaker
from collector.service import CollectorState
from collector.shards import ShardClaimer, fair_share, shard_of
from test_e2e_fleet import console_script, free_port, stop, wait_http

# Pinned: a policy's shard must not change between releases, machines or processes, or two
# collectors of different builds would judge the same policy (or none would).
PINNED = {("web", 16): 1, ("transit", 16): 3, ("check-00042", 12): 9, ("sla", 1024): 638}


@pytest.mark.parametrize(("policy", "shards"), sorted(PINNED))
def test_a_policys_shard_is_pinned(policy: str, shards: int) -> None:
    assert shard_of(policy, shards) == PINNED[(policy, shards)]


def test_a_policys_shard_is_the_same_in_another_process() -> None:
    names = [f"check-{i:05d}" for i in range(200)] + ["web", "dns é", "transit"]
    here = [shard_of(n, 16) for n in names]
    code = ("import json, sys; from collector.shards import shard_of; "
            "print(json.dumps([shard_of(n, 16) for n in json.loads(sys.stdin.read())]))")
    # Python's own hash() differs with the seed; the shard must not
    for seed in ("2" if os.environ.get("PYTHONHASHSEED") == "1" else "1",):
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(names), text=True,
                             capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed},
                             cwd=Path(__file__).resolve().parent.parent)
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("shards", [12, 16, 64])
def test_ten_thousand_policies_spread_evenly_over_the_shards(shards: int) -> None:
    counts = Counter(shard_of(f"check-{i:05d}", shards) for i in range(10_000))
    mean = 10_000 / shards
    assert set(counts) == set(range(shards))
    assert max(counts.values()) <= 1.15 * mean and min(counts.values()) >= 0.85 * mean, counts


@pytest.mark.parametrize(("shards", "collectors", "share"), [
    (12, 1, 12), (12, 2, 6), (12, 3, 4), (16, 3, 6), (16, 5, 4), (1, 3, 1), (12, 0, 12),
])
def test_each_collector_aims_at_its_fair_share_rounded_up(shards: int, collectors: int, share: int) -> None:
    assert fair_share(shards, collectors) == share
    assert share * max(collectors, 1) >= shards  # the shares cover every shard


@pytest.mark.parametrize(("value", "message"), [
    (0, "test: evaluation.shards: Input should be greater than or equal to 1"),
    (1025, "test: evaluation.shards: Input should be less than or equal to 1024"),
    ("many", "test: evaluation.shards: Input should be a valid integer"),
])
def test_a_bad_shard_count_is_refused_naming_the_key(value, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"evaluation": {"shards": value}}, "test")
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("shards", "split"), [(12, [4, 4, 4]), (16, [5, 5, 6])])
async def test_three_collectors_share_the_shards_and_take_over_a_silent_ones(database_url: str, shards: int,
                                                                             split: list[int]) -> None:
    """The claiming rounds with the collectors' own times given explicitly (no clock patched)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several collectors share a PostgreSQL database (SQLite is one process's file)")
    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = make_engine(database_url)
    try:
        sm = make_sessionmaker(engine)
        a, b, c = (ShardClaimer(sm, f"host-{n}", shards) for n in "abc")
        t0 = datetime.now(timezone.utc)
        ttl = 2.0
        step = timedelta(seconds=0.1)

        async def round_(at: datetime, *claimers: ShardClaimer) -> None:
            # at once, as separate processes would: the conditional claims decide
            await asyncio.gather(*(x.claim(at, ttl) for x in claimers))
            held = [x.held for x in claimers]
            assert sum(map(len, held)) == len(frozenset().union(*held)), held  # nobody shares a shard

        await round_(t0, a)
        assert len(a.held) == shards  # alone: everything
        at = t0 + step
        await round_(at, b, c)
        for _ in range(10):
            at += step
            await round_(at, a, b, c)
            if sorted(len(x.held) for x in (a, b, c)) == split:
                break
        assert sorted(len(x.held) for x in (a, b, c)) == split
        before = [x.held for x in (a, b, c)]
        for _ in range(3):  # and it stays so: no shard moves once the split is even
            at += step
            await round_(at, a, b, c)
        assert [x.held for x in (a, b, c)] == before
        # c falls silent: once its leases expire the other two take its shards
        await round_(at + timedelta(seconds=ttl - 0.5), a, b)
        assert len(a.held) + len(b.held) == shards - len(c.held)  # not yet expired: nobody takes them
        await round_(at + timedelta(seconds=ttl + 0.1), a, b)
        assert (len(a.held), len(b.held)) == (shards // 2, shards // 2)
        claim = await c.claim(at + timedelta(seconds=ttl + 0.2), ttl)  # c wakes up: its shards are gone
        assert claim.lost == before[2] and not claim.held - claim.taken
        # a clean stop gives its shards and its own lease back: the others need not wait
        await b.release()
        await round_(at + timedelta(seconds=ttl + 0.3), a, c)
        assert (len(a.held), len(c.held)) == (shards // 2, shards // 2) and not b.held
    finally:
        await engine.dispose()


async def test_a_single_collector_on_sqlite_holds_every_shard(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'collector.sqlite'}"
    await asyncio.to_thread(migrate.upgrade, url)
    state = CollectorState.create(parse_config({
        "database_url": url, "evaluation": {"interval": "1h", "grace": "1s", "shards": 16},
        "agents": [{"id": "a1", "token": "token-a1-0123456789"}],
        "checks": [{"name": f"c{i}", "type": "icmp", "host": "127.0.0.1", "interval": 60} for i in range(40)],
    }, "test"))
    try:
        await state.sync_config()
        await jobs.evaluate(state)
        assert state.shards_held == frozenset(range(16))
        assert state.metrics.registry.get_sample_value("uptime_collector_evaluation_shards_held") == 16
        assert state.metrics.registry.get_sample_value("uptime_collector_lease_held", {"lease": "evaluation/3"}) == 1
        assert state.policies_of(state.shards_held) == set(state.policies)  # every policy judged here
        await state.release_leases()
        assert state.shards_held == frozenset()
    finally:
        await state.engine.dispose()


# --- three `uptime-collector serve` processes --------------------------------------------------

SHARDS = 12
TTL = 4.0  # 16 evaluation intervals: a collector slowed by a busy machine still renews in time
EVAL_INTERVAL = 0.25
CHECK_INTERVAL = 1.0
TOKEN = "shard-token-a1-0123456789"


async def shard_holders(pg: asyncpg.Connection) -> dict[int, str]:
    """Shard -> holder of its unexpired lease, as the database has it."""
    rows = await pg.fetch("SELECT name, holder FROM leases WHERE name LIKE 'evaluation/%' AND expires_at >= now()")
    return {int(r["name"].split("/")[1]): r["holder"] for r in rows}


async def believed(http: aiohttp.ClientSession, base: str) -> set[int]:
    """The shards a collector says (its metrics) it holds."""
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return {n for n in range(SHARDS) if f'uptime_collector_lease_held{{lease="evaluation/{n}"}} 1.0' in text}


def pid_of(holder: str) -> int:
    return int(holder.rsplit("-", 2)[1])  # instance ids are host-pid-random


async def test_three_collector_processes_share_twelve_shards_and_survive_a_kill(database_url: str,
                                                                               tmp_path: Path) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several collectors share a PostgreSQL database (SQLite is one process's file)")
    ports = [free_port() for _ in range(3)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    checks = [{"name": f"svc{i}", "type": "http", "interval": CHECK_INTERVAL, "url": "http://127.0.0.1:9/",
               "timeout": "500ms", "agents": ["a1"], "outage": {"quorum": "all", "min_duration": "2s"}}
              for i in range(6)]
    for i, port in enumerate(ports):
        (tmp_path / f"collector{i}.yml").write_text(yaml.safe_dump({
            "listen": {"host": "127.0.0.1", "port": port}, "database_url": database_url,
            "evaluation": {"interval": f"{int(EVAL_INTERVAL * 1000)}ms", "grace": "300ms", "status_interval": "1h",
                           "shards": SHARDS},
            "lease_ttl": f"{int(TTL)}s", "agents": [{"id": "a1", "token": TOKEN}], "checks": checks}))
    logs = tmp_path / "logs"
    logs.mkdir()

    def start_collector(i: int) -> subprocess.Popen:
        return subprocess.Popen([console_script("uptime-collector"), "serve", "--config", str(tmp_path / f"collector{i}.yml")],
                                stdout=open(logs / f"collector{i}.log", "a"), stderr=subprocess.STDOUT, cwd=tmp_path)

    collectors = [start_collector(0)]
    pg = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    alive = list(range(3))
    failing = "svc3"
    stopping = asyncio.Event()

    async def agent(http: aiohttp.ClientSession) -> None:
        """One agent: svc3 failing, the others up, a result per slot to any live collector."""
        sent = None
        while not stopping.is_set():
            now = datetime.now(timezone.utc)
            slot = now.replace(microsecond=0)
            if slot != sent:
                results = [{"id": uuid.uuid4().hex, "check": c["name"], "slot": slot.isoformat(),
                            "started": (slot + timedelta(milliseconds=5)).isoformat(),
                            "ok": c["name"] != failing, "latency_ms": 1.0 if c["name"] != failing else None,
                            "status_code": 200 if c["name"] != failing else None,
                            "error": None if c["name"] != failing else "connect"} for c in checks]
                for i in list(alive):
                    try:
                        async with http.post(f"{bases[i]}/api/v1/results", json={"agent": "a1", "results": results},
                                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                            if resp.status == 200:
                                sent = slot
                                break
                    except aiohttp.ClientError:
                        continue
            await asyncio.sleep(0.1)

    async def open_window(http: aiohttp.ClientSession, base: str) -> str | None:
        async with http.get(f"{base}/api/v1/outages", params={"policy": failing}) as resp:
            outages = (await resp.json())["outages"]
        return next((w["start"] for w in outages if w["end"] is None), None)

    async def sample(http: aiohttp.ClientSession, who: list[int], strict: bool = True
                     ) -> tuple[dict[int, str], list[set[int]]]:
        """The database's holders and each collector's own view; no shard is believed held by two.
        Not `strict` while collectors still give shards back to one another: a scrape just before
        one gives a shard back and one just after another took it would see both."""
        views = await asyncio.gather(*(believed(http, bases[i]) for i in who))
        for x in range(len(views)):
            for y in range(x + 1, len(views)):
                assert not strict or not views[x] & views[y], (who, views)
        return await shard_holders(pg), views

    async def until(predicate, timeout: float, what: str):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            got = await predicate()
            if got:
                return got
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.1)

    try:
        # the first one migrates the schema and writes the config's agents and checks; three
        # collectors starting at once on an empty database would race to insert the same agents
        await wait_http(f"{bases[0]}/healthz")
        collectors += [start_collector(1), start_collector(2)]
        for base in bases[1:]:
            await wait_http(f"{base}/healthz")
        async with aiohttp.ClientSession() as http:
            poster = asyncio.create_task(agent(http))
            try:
                pids = {p.pid: i for i, p in enumerate(collectors)}

                async def shared_evenly():
                    holders, views = await sample(http, [0, 1, 2], strict=False)
                    per = Counter(pids.get(pid_of(h)) for h in holders.values())
                    settled = len(holders) == SHARDS and all(3 <= per[i] <= 5 for i in range(3))
                    # each collector's own view agrees with the database
                    return settled and all(views[i] == {n for n, h in holders.items() if pids.get(pid_of(h)) == i}
                                           for i in range(3)) and per

                per = await until(shared_evenly, 15, "the three collectors never shared the 12 shards evenly")
                for _ in range(5):  # and it stays so: every shard held by exactly one, 4 +- 1 each
                    await asyncio.sleep(0.2)
                    holders, _ = await sample(http, [0, 1, 2])
                    assert len(holders) == SHARDS and set(Counter(holders.values()).values()) <= {3, 4, 5}
                started = await until(lambda: open_window(http, bases[0]), 15, f"no window opened for {failing}")

                # kill the collector judging the failing check, mid-outage
                holders = await shard_holders(pg)
                victim = pids[pid_of(holders[shard_of(failing, SHARDS)])]
                progress = "SELECT judged_until FROM policy_progress WHERE policy = $1"
                judged_before = await pg.fetchval(progress, failing)
                collectors[victim].send_signal(signal.SIGKILL)
                collectors[victim].wait(10)
                killed_at = datetime.now(timezone.utc)
                # when the victim's leases run out: its last renewal plus the ttl
                expiry = await pg.fetchval("SELECT max(expires_at) FROM leases WHERE holder = $1 AND name LIKE 'evaluation/%'",
                                           holders[shard_of(failing, SHARDS)])
                alive.remove(victim)
                theirs = {n for n, h in holders.items() if h == holders[shard_of(failing, SHARDS)]}
                while datetime.now(timezone.utc) < expiry - timedelta(seconds=0.3):
                    # until its leases run out nobody takes the dead one's shards
                    now_held = await shard_holders(pg)
                    assert all(now_held.get(n) == holders[n] for n in theirs), (theirs, now_held)
                    await asyncio.sleep(0.1)

                async def survivors_hold_all():
                    holders, views = await sample(http, alive)
                    return (len(holders) == SHARDS and {pids.get(pid_of(h)) for h in holders.values()} == set(alive)
                            and sum(map(len, views)) == SHARDS)

                await until(survivors_hold_all, TTL + EVAL_INTERVAL + 3, "the survivors never took the killed one's shards")
                taken = datetime.now(timezone.utc)
                print(f"\nshards per collector before the kill {dict(per)}; all held by the survivors "
                      f"{(taken - killed_at).total_seconds():.2f} s after the kill, "
                      f"{(taken - expiry).total_seconds():.2f} s after the victim's leases ran out")
                assert expiry <= killed_at + timedelta(seconds=TTL)
                # within one evaluation interval of the expiry (+ 1 s for a busy machine and this
                # test's polling)
                assert taken - expiry <= timedelta(seconds=EVAL_INTERVAL + 1.0)
                for _ in range(5):
                    await asyncio.sleep(0.2)
                    holders, views = await sample(http, alive)
                    assert len(holders) == SHARDS and sorted(map(len, views)) == [6, 6]
                # the window stays open, from the same start, judged now by a survivor
                await asyncio.sleep(3 * CHECK_INTERVAL)
                for i in alive:
                    assert await open_window(http, bases[i]) == started
                holder = pids[pid_of((await shard_holders(pg))[shard_of(failing, SHARDS)])]
                assert holder in alive
                judged = await pg.fetchval(progress, failing)  # its newest rounds are judged again
                assert judged >= judged_before + timedelta(seconds=3 * CHECK_INTERVAL), (judged_before, judged)
            finally:
                stopping.set()
                await poster
    finally:
        stopping.set()
        stop(collectors)
        for p in collectors:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await pg.close()
