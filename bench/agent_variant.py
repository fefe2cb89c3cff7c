"""The real agent (agent.runner.Agent, its scheduler, spool, shipper and metrics) run with one or
two changes that the benchmarks recommend, to measure what they would give. A prototype for the
benchmark only: the shipped agent is `uptime-agent run`, which this does not change.

    python bench/agent_variant.py --config agent.yml [--uvloop] [--shared-connector] [--batched-spool]
        [--grouped-schedule] [--noop-prober]

--uvloop            run the agent's event loop on uvloop (libuv) instead of asyncio's selector loop.
--shared-connector  HTTP probes go through one aiohttp session per process whose connector still
                    opens a fresh connection for every probe (force_close=True, no DNS cache), instead
                    of building and tearing down a session and a connector per probe. The probe's own
                    code (agent/probers/http.py: request, bounded body read, failure reasons) is
                    unchanged: only the two constructors it calls are redirected.
--batched-spool    results are written to the spool in group commits (one executor call and one
                    transaction per 50 ms of results) instead of one thread hand-off and one
                    transaction per result; each probe still waits until its result is committed.
--grouped-schedule  one APScheduler job per distinct interval that starts every check of that
                    interval at its aligned slot, instead of one job (with its own trigger, executor
                    submission, events and job-store update) per check.
--noop-prober       HTTP checks "succeed" at once without any I/O: what the agent's pipeline
                    (scheduler, spool, shipper, metrics) costs without the probe itself.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from agent.config import load_config  # noqa: E402


class _SharedSession:
    """Stands in for `aiohttp.ClientSession(connector=..., timeout=...)` inside the probe."""

    shared: aiohttp.ClientSession | None = None

    def __init__(self, connector=None, timeout=None):
        self._timeout = timeout

    @classmethod
    def _get(cls) -> aiohttp.ClientSession:
        if cls.shared is None:
            connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, limit=0)
            cls.shared = aiohttp.ClientSession(connector=connector)
        return cls.shared

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def request(self, method, url, **kwargs):
        return self._get().request(method, url, timeout=self._timeout, **kwargs)


class _AiohttpShim:
    """What `agent.probers.http` sees as `aiohttp`: everything real except the two constructors."""

    def __getattr__(self, name):
        return getattr(aiohttp, name)

    @staticmethod
    def TCPConnector(**kwargs):  # noqa: N802 - mirrors aiohttp's name
        return None

    ClientSession = _SharedSession


def install_shared_connector() -> None:
    from agent.probers import http

    http.aiohttp = _AiohttpShim()


def install_noop_prober() -> None:
    from agent.probers import PROBERS, ProbeResult

    async def noop(check, *, agent_id=None, **options):
        return ProbeResult.success(0.0, status_code=200)

    PROBERS["http"] = noop


def install_batched_spool(window: float = 0.05) -> None:
    import json
    import time as _time

    from agent.spool import Spool

    def _put_many(self, items):
        now = _time.time()
        # an explicit transaction: the spool's connection is in autocommit mode, where
        # `with connection:` would begin nothing and every row would commit on its own
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO results (id, spooled, payload) VALUES (?, ?, ?)",
                [(rid, now, payload) for rid, payload in items],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        inserted = self._db.total_changes - before
        self._count += inserted
        self._bytes += sum(len(p) for _, p in items) if inserted == len(items) else 0

    async def _flush(self):
        items, fut = self._bench_pending, self._bench_fut
        self._bench_pending, self._bench_fut = [], None
        try:
            await self._run(_put_many, self, items)
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        else:
            fut.set_result(None)
        self._publish()
        if self._bytes > self.max_bytes:
            await self._run(self._drop_for_bytes)
            self._publish()

    async def put(self, result):
        payload = json.dumps(result, separators=(",", ":"))
        if not hasattr(self, "_bench_pending"):
            self._bench_pending, self._bench_fut = [], None
        self._bench_pending.append((result["id"], payload))
        fut = self._bench_fut
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._bench_fut = loop.create_future()
            loop.call_later(window, lambda: loop.create_task(_flush(self)))
        await asyncio.shield(fut)

    Spool.put = put


def install_grouped_schedule() -> None:
    from datetime import timezone

    from apscheduler.triggers.interval import IntervalTrigger

    from agent import runner, schedule
    from protocol.timestamps import EPOCH

    class GroupedCheckScheduler(schedule.CheckScheduler):
        def __init__(self, run_slot, on_missed):
            super().__init__(run_slot, on_missed)
            # a whole interval's slot missed (the job fired too late) is a missed slot of every
            # check in it, reported per check as the shipped scheduler does
            self._executor._on_missed = self._group_missed
            self._groups: dict[float, dict[str, object]] = {}
            self._running: dict[str, int] = {}
            self._tasks: set[asyncio.Task] = set()

        def _group_missed(self, job_id, slots) -> None:
            for interval, group in self._groups.items():
                if job_id == f"interval-{interval!r}":
                    for name in list(group):
                        self._on_missed(name, slots)
                    return
            self._on_missed(job_id, slots)

        def _skipped(self, event) -> None:
            self._group_missed(event.job_id, list(event.scheduled_run_times))

        def add(self, check) -> None:
            self.remove(check.name)
            group = self._groups.get(check.interval)
            if group is None:
                group = self._groups[check.interval] = {}
                self._scheduler.add_job(
                    self._fire, trigger=IntervalTrigger(seconds=check.interval, start_date=EPOCH, timezone=timezone.utc),
                    args=[check.interval], id=f"interval-{check.interval!r}",
                    misfire_grace_time=schedule.misfire_grace(check.interval), max_instances=1,
                )
            group[check.name] = check
            self.checks[check.name] = check

        def remove(self, name):
            check = self.checks.pop(name, None)
            if check is not None:
                group = self._groups[check.interval]
                group.pop(name, None)
                if not group:
                    del self._groups[check.interval]
                    self._scheduler.remove_job(f"interval-{check.interval!r}")
            return check

        async def _fire(self, interval, scheduled=None):
            create = asyncio.get_running_loop().create_task
            for name, check in list(self._groups.get(interval, {}).items()):
                if self._running.get(name, 0) >= schedule.MAX_INSTANCES:
                    self._on_missed(name, [scheduled])
                    continue
                self._running[name] = self._running.get(name, 0) + 1
                task = create(self._one(check, scheduled))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        async def _one(self, check, scheduled):
            try:
                await self._run_slot(check, scheduled=scheduled)
            finally:
                self._running[check.name] -= 1

        async def shutdown(self) -> None:
            tasks = list(self._tasks)
            await super().shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    runner.CheckScheduler = GroupedCheckScheduler


async def run(config_path: str) -> None:
    from agent.runner import Agent

    config = load_config(config_path, env={})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(config)
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.stop()
        if _SharedSession.shared is not None:
            await _SharedSession.shared.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--shared-connector", action="store_true")
    ap.add_argument("--noop-prober", action="store_true")
    ap.add_argument("--batched-spool", action="store_true")
    ap.add_argument("--grouped-schedule", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if args.shared_connector:
        install_shared_connector()
    if args.noop_prober:
        install_noop_prober()
    if args.batched_spool:
        install_batched_spool()
    if args.grouped_schedule:
        install_grouped_schedule()
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args.config))
    else:
        asyncio.run(run(args.config))


if __name__ == "__main__":
    main()
