"""The agent as a pipeline: config source -> scheduler -> probers -> spool -> shipper.

`Agent` holds no global state and installs no signal handlers, so several can run in one event
loop (the collector's demo runs six), each with its own registry, spool and metrics port:

    agent = Agent(config, on_result=print)
    await agent.start()
    ...
    await agent.stop()
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.assignments import Assignments
from agent.collector_client import CollectorClient
from agent.config import AgentConfig, resolve
from agent.metrics import AgentMetrics, MetricsServer
from agent.overload import TIMING_REASONS, LoopLag, doubt_threshold
from agent.probers import ProbeResult, guard, icmp, prepare, run_probe
from agent.schedule import CheckScheduler, probe_seconds
from agent.shipper import Heartbeat, Shipper, signer_for
from agent.spool import Spool
from protocol.checks import Check, ConfigError
from protocol.redact import redact_url
from protocol.timestamps import rfc3339, slot_of, utcnow

log = logging.getLogger(__name__)

OnResult = Callable[[dict[str, Any]], Any]

# How often the spool's max_age is enforced between writes (a quarter of max_age, at most a
# minute): results never outlive their bound by more than that.
BOUNDS_CHECK_MAX_SECONDS = 60.0
DEFAULT_STOP_TIMEOUT = 5.0
MISSED_LOGS_PER_SECOND = 20


# File descriptors kept for the spool, the collector's connections, the metrics server and logs:
# the rest may be probes in flight (each holds a socket).
FD_RESERVE = 256


def _fd_bounded(max_in_flight: int, agent_id: str) -> int:
    """schedule.max_in_flight, lowered to what the process's open-file limit allows: past it,
    probes would fail to open their sockets and read as the targets' `connect` failures."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_in_flight
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= max_in_flight:
        return max_in_flight
    bounded = max(1, soft - FD_RESERVE)
    log.warning("agent %s: schedule.max_in_flight %d lowered to %d by the open-file limit (ulimit -n %d)",
                agent_id, max_in_flight, bounded, soft)
    return bounded


class Agent:
    """One probing agent. Public: start(), stop(), apply_checks(), checks, agent_id,
    metrics_port, metrics, registry, spool, clock_offset."""

    def __init__(self, config: AgentConfig, *, on_result: OnResult | None = None):
        # Fills nothing from the environment (several agents may share a process); it reads a
        # token_file and insists on an agent id and a token.
        self.config = resolve(config, env={})
        self.agent_id = self.config.agent_id
        self._on_result = on_result
        # The SSRF guard (config `guard:`), handed to every HTTP probe; None when off. On by
        # default when the checks come from the collector (agent/config.py GuardSection): an
        # agent runs either its own checks or the assigned ones, so this is decided once.
        self._guard: guard.AddressGuard | None = None
        if self.config.guard.applies(assigned=not self.config.local_checks):
            if not guard.SUPPORTED:
                raise ConfigError([("guard.block_private", ("needs aiohttp 3.12 or later (TCPConnector socket_factory); "
                                                            "set guard.block_private: false to run without it"))])
            self._guard = guard.AddressGuard(self.config.guard.networks())
        self.metrics = AgentMetrics(self.agent_id)
        self.registry = self.metrics.registry
        self.spool = Spool(
            self.config.spool_path(),
            max_bytes=self.config.spool.max_bytes,
            max_age=self.config.spool.max_age,
            metrics=self.metrics,
        )
        collector = self.config.collector
        self._client = CollectorClient(collector.url, collector.token, self.agent_id, timeout=collector.request_timeout)
        self.shipper = Shipper(
            self._client,
            self.spool,
            self.metrics,
            batch_size=collector.batch_size,
            flush_interval=collector.flush_interval,
            signer=signer_for(self.config),
        )
        self.heartbeat = Heartbeat(self._client, self.spool, self.metrics, interval=collector.heartbeat_interval)
        schedule = self.config.schedule
        self._scheduler = CheckScheduler(
            self._run_slot, self._on_missed, spread=schedule.spread,
            max_in_flight=_fd_bounded(schedule.max_in_flight, self.agent_id), max_lateness=schedule.max_lateness,
        )
        self.metrics.probes_in_flight.set_function(lambda: self._scheduler.in_flight)
        self.metrics.probes_waiting.set_function(lambda: self._scheduler.waiting)
        self._assignments: Assignments | None = None
        if not self.config.local_checks:
            self._assignments = Assignments(
                self._client,
                self.spool.path.parent / f"assignments-{self.agent_id}.json",
                interval=collector.assignments_interval,
                apply=self.apply_checks,
            )
        listen = self.config.metrics.host_port()
        self._metrics_server = (
            MetricsServer(self.metrics, listen[0], listen[1], self._health) if listen else None
        )
        self.metrics_port: int | None = None
        self._last_ok: dict[str, bool] = {}
        self._icmp_checked = False
        self._bounds_task: asyncio.Task | None = None
        self._callbacks: set[asyncio.Task] = set()
        self._loop_lag = LoopLag(on_sample=self.metrics.loop_lag.set)
        self._missed_window, self._missed_logged, self._missed_unlogged = 0.0, 0, 0
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """1. open the spool (results of an earlier run are shipped first); 2. serve metrics;
        3. start shipping and heartbeats; 4. schedule the local or the assigned checks."""
        if self._started:
            raise RuntimeError(f"agent {self.agent_id} already started")
        self._started = True
        try:
            await self.spool.open()
            if self._metrics_server is not None:
                self.metrics_port = await self._metrics_server.start()
            await self._client.open()
            self.shipper.start()
            self.heartbeat.start()
            self._bounds_task = asyncio.create_task(self._enforce_bounds(), name=f"spool-bounds-{self.agent_id}")
            self._loop_lag.start()
            self._scheduler.start()
            if self._assignments is None:
                await self.apply_checks(self.config.checks or [])
            else:
                await self._assignments.load_initial()
                self._assignments.start()
        except BaseException:
            await self.stop(timeout=0)
            raise
        log.info(
            "agent %s started: %d checks, collector %s, metrics %s, spool %s%s",
            self.agent_id, len(self.checks), redact_url(self.config.collector.url),
            f"port {self.metrics_port}" if self.metrics_port else "off", self.spool.path,
            ", guard on (HTTP, journey, TCP and DNS checks never connect to private, loopback, link-local or "
            "metadata addresses)"
            if self._guard is not None else "",
        )

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop probing, ship what can be shipped within `timeout`, leave the rest in the spool."""
        if not self._started:
            return
        self._started = False
        if self._assignments is not None:
            await self._assignments.stop()
        await self._scheduler.shutdown()
        await self._loop_lag.stop()
        for task in (self._bounds_task, *self._callbacks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._bounds_task, *self._callbacks) if t), return_exceptions=True)
        await self.heartbeat.stop()
        if self.spool.is_open:
            await self.shipper.stop(flush_timeout=timeout)
        await self._client.close()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        await self.spool.close()
        log.info("agent %s stopped", self.agent_id)

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # --- checks --------------------------------------------------------------------------------

    @property
    def checks(self) -> dict[str, Check]:
        """The scheduled checks by name (a copy)."""
        return dict(self._scheduler.checks)

    @property
    def clock_offset(self) -> float | None:
        return self.heartbeat.offset

    async def apply_checks(self, checks: list[Check]) -> None:
        """Make `checks` the scheduled set: removed ones stop, changed ones are removed and
        re-added (never patched in place), new ones start at their next aligned slot."""
        wanted = {check.name: check for check in checks}
        current = self._scheduler.checks
        removed = [name for name in current if name not in wanted]
        changed = [name for name in wanted if name in current and current[name] != wanted[name]]
        added = [name for name in wanted if name not in current]
        for name in removed + changed:
            old = self._scheduler.remove(name)
            self.metrics.remove_check(name, old.type)
            self._last_ok.pop(name, None)
        prepare([wanted[name] for name in changed + added])  # TLS contexts built before the first timed probe
        for name in changed + added:
            self._scheduler.add(wanted[name])
            self.metrics.add_check(name, wanted[name].type, wanted[name])
        if removed or changed or added:
            log.info(
                "agent %s checks: %d scheduled (added %s, changed %s, removed %s)",
                self.agent_id, len(wanted), added or "none", changed or "none", removed or "none",
            )
        if not self._icmp_checked and any(check.type == "icmp" for check in checks):
            self._icmp_checked = True  # said once per agent, at the first ICMP check
            problem = icmp.permission_problem()
            if problem:
                log.error("agent %s: ICMP checks will fail with 'permission': %s", self.agent_id, problem)

    # --- one slot ------------------------------------------------------------------------------

    async def _run_slot(self, check: Check, scheduled: datetime | None = None) -> None:
        """Probe `check` for the slot of its scheduled time (slot + the check's offset).

        1. slot from the scheduled time, not the (possibly late) start; 2. wait the jitter;
        3. probe; 4. count it; 5. spool it (before any shipping); 6. tell the callback."""
        # the offset is less than the interval, so the scheduled time lies in its own slot
        slot = slot_of(scheduled if scheduled is not None else utcnow(), check.interval)
        jitter = self.config.schedule.jitter
        if jitter > 0:
            # never so long that the probe could no longer finish inside its slot: with an offset
            # late in the slot, jitter + offset + timeout can exceed the interval
            room = (slot - utcnow()).total_seconds() + check.interval - probe_seconds(check)
            wait = min(random.uniform(0, jitter), room)
            if wait > 0:
                await asyncio.sleep(wait)
        started = utcnow()
        result_id = uuid.uuid4().hex  # made once here; every retry ships this same id
        t0 = time.perf_counter()
        loop_t0 = asyncio.get_running_loop().time()
        # the guard goes to every prober that connects where the check says (ICMP ignores it)
        outcome = await run_probe(check, agent_id=self.agent_id, guard=self._guard,
                                  http_client=self.config.agent.http_client)
        duration = time.perf_counter() - t0
        if not outcome.ok and outcome.error in TIMING_REASONS:
            late = self._loop_lag.worst_since(loop_t0)
            if late > doubt_threshold(check.timeout):
                # agent/overload.py: the agent's own lateness may have caused this failure
                self.metrics.doubtful_failures.labels(check=check.name).inc()
                log.warning("%s %s: %s failure in slot %s not reported: the agent's event loop was %.0f ms late "
                            "during the probe (timeout %.0f ms); the slot stays without this agent's evidence",
                            self.agent_id, check.name, outcome.error, rfc3339(slot), late * 1000, check.timeout * 1000)
                return

        if self._scheduler.checks.get(check.name) is check:  # not removed or replaced meanwhile
            # lateness from the scheduled time: the offset is where the probe was meant to start
            self.metrics.observe_probe(
                check.name, check.type, outcome.error or "ok", outcome.ok, duration,
                (started - (scheduled if scheduled is not None else slot)).total_seconds(), outcome,
            )
        # wire-protocol.md: the five fields of every result, then the details its type has
        record = {
            "id": result_id,
            "check": check.name,
            "slot": rfc3339(slot),
            "started": rfc3339(started),
            **outcome.to_wire(),
        }
        scheduled_text = rfc3339(scheduled) if scheduled is not None else record["slot"]
        if scheduled_text != record["slot"]:
            # wire-protocol.md `scheduled`: sent when the check has an offset into its slot
            # (schedule.spread); without one, the slot is the scheduled time
            record["scheduled"] = scheduled_text
        await self.spool.put(record)
        self.shipper.notify()
        self._log_transition(check, outcome)
        if self._on_result is not None:
            self._deliver({"agent": self.agent_id, "type": check.type, **record})

    def _deliver(self, result: dict[str, Any]) -> None:
        try:
            returned = self._on_result(result)
        except Exception:
            log.exception("on_result callback failed")
            return
        if inspect.isawaitable(returned):
            task = asyncio.ensure_future(returned)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("on_result callback failed: %r", task.exception())

    def _log_transition(self, check: Check, outcome: ProbeResult) -> None:
        previous = self._last_ok.get(check.name)
        self._last_ok[check.name] = outcome.ok
        if previous == outcome.ok:
            log.debug("%s %s: %s", self.agent_id, check.name, outcome)
        elif outcome.ok:
            latency = f"{outcome.latency_ms:.1f} ms" if outcome.latency_ms is not None else ""
            log.info("%s %s: up %s", self.agent_id, check.name, latency)
        else:
            log.warning("%s %s: DOWN (%s: %s)", self.agent_id, check.name, outcome.error, outcome.detail)

    def _on_missed(self, name: str, slots: list[datetime]) -> None:
        if name not in self._scheduler.checks:
            return
        self.metrics.missed_slots.labels(check=name).inc(len(slots))
        # an overloaded agent with thousands of checks misses thousands at once: the first few of
        # each second are logged one by one, the rest summed up (the metric counts every one)
        now = time.monotonic()
        if now - self._missed_window >= 1.0:
            if self._missed_unlogged:
                log.warning("%s: %d more checks missed slots in the last second (not logged one by one; see "
                            "uptime_agent_missed_slots_total)", self.agent_id, self._missed_unlogged)
            self._missed_window, self._missed_logged, self._missed_unlogged = now, 0, 0
        self._missed_logged += 1
        if self._missed_logged > MISSED_LOGS_PER_SECOND:
            self._missed_unlogged += 1
            return
        offset = self._scheduler.offsets.get(name, 0.0)
        late = (utcnow() - slots[-1]).total_seconds() - offset  # from the last one's scheduled time
        log.warning(
            "%s %s: %d slot(s) not probed, %s..%s (the agent was %.1fs late: stalled, more than "
            "schedule.max_in_flight=%d probes running, or the check's earlier probes still running)",
            self.agent_id, name, len(slots), rfc3339(slots[0]), rfc3339(slots[-1]), late,
            self._scheduler.max_in_flight,
        )

    # --- housekeeping --------------------------------------------------------------------------

    async def _enforce_bounds(self) -> None:
        period = min(BOUNDS_CHECK_MAX_SECONDS, self.config.spool.max_age / 4)
        while True:
            await asyncio.sleep(period)
            try:
                await self.spool.enforce_bounds()
            except Exception:
                log.exception("enforcing spool bounds failed")

    def _health(self) -> dict[str, Any]:
        return {
            "agent": self.agent_id,
            "status": "ok",
            "checks": len(self._scheduler.checks),
            "probes_in_flight": self._scheduler.in_flight,
            "spool_results": self.spool.count,
            "clock_offset_seconds": self.heartbeat.offset,
        }
