"""The agent's own Prometheus metrics, on a registry per Agent instance (several agents can
share a process), and the small aiohttp server that exposes them at GET /metrics."""
from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent.probers import RESULTS_BY_TYPE

NAMESPACE = "uptime_agent"
# Start lateness is scheduler delay plus the configured jitter: milliseconds when healthy,
# seconds when the event loop is starved or jitter is large.
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# bytes/age: unshipped results dropped by the spool's bounds; rejected_bytes: results the collector
# refused for good, dropped (oldest first, before any unshipped one) to keep within spool.max_bytes.
DROP_REASONS = ("bytes", "age", "rejected_bytes")
SHIP_FAILURE_REASONS = ("connect", "timeout", "server_error", "rate_limited", "unauthorized", "rejected", "unexpected")


class AgentMetrics:
    """Process counters for one agent, each series created before its first event."""

    def __init__(self, agent_id: str, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.probe_success = Gauge(
            "probe_success", "1 if the check's last probe succeeded, else 0", ["check", "type"], namespace=ns, registry=r
        )
        self.probe_duration = Gauge(
            "probe_duration_seconds", "Wall time of the check's last probe", ["check", "type"], namespace=ns, registry=r
        )
        self.probes = Counter(
            "probes", "Probes run, by result (ok or the failure reason)", ["check", "type", "result"], namespace=ns, registry=r
        )
        self.check_start_lateness = Histogram(
            "check_start_lateness_seconds",
            "How long after its aligned slot a probe started (scheduler delay plus jitter)",
            namespace=ns,
            registry=r,
            buckets=LATENESS_BUCKETS,
        )
        self.missed_slots = Counter(
            "missed_slots", "Slots not probed because the agent was too late for them", ["check"], namespace=ns, registry=r
        )
        self.doubtful_failures = Counter(
            "doubtful_failures",
            "Failed probes not reported because the agent's own event loop was late during them "
            "(agent/overload.py): their slots stay without this agent's evidence",
            ["check"], namespace=ns, registry=r,
        )
        self.loop_lag = Gauge("event_loop_lag_seconds", "How late the agent's event loop woke up at its last sample",
                              namespace=ns, registry=r)
        self.spool_results = Gauge("spool_results", "Results in the spool, not yet acknowledged", namespace=ns, registry=r)
        self.spool_dropped = Counter(
            "spool_dropped_results",
            "Results dropped unshipped from the spool because a bound was hit",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.shipped = Counter("shipped_results", "Results acknowledged by the collector", namespace=ns, registry=r)
        self.rejected = Counter(
            "rejected_results",
            "Results the collector refused for good (400/413/422), kept in the spool's rejected table",
            namespace=ns,
            registry=r,
        )
        self.ship_failures = Counter(
            "ship_failures", "Failed POSTs to the collector, by reason", ["reason"], namespace=ns, registry=r
        )
        self.clock_offset = Gauge(
            "clock_offset_seconds",
            "Collector clock minus agent clock, estimated from the last heartbeat",
            namespace=ns,
            registry=r,
        )
        self.info = Gauge("info", "Constant 1, labelled with the agent id", ["agent"], namespace=ns, registry=r)
        self.info.labels(agent=agent_id).set(1)
        for reason in DROP_REASONS:
            self.spool_dropped.labels(reason=reason)
        for reason in SHIP_FAILURE_REASONS:
            self.ship_failures.labels(reason=reason)

    def add_check(self, name: str, check_type: str) -> None:
        self.probe_success.labels(check=name, type=check_type)
        self.probe_duration.labels(check=name, type=check_type)
        for result in RESULTS_BY_TYPE.get(check_type, ("ok",)):
            self.probes.labels(check=name, type=check_type, result=result)
        self.missed_slots.labels(check=name)
        self.doubtful_failures.labels(check=name)

    def remove_check(self, name: str, check_type: str) -> None:
        """Forget a removed check's series, so its last value does not linger as if current."""
        for metric, labels in (
            (self.probe_success, (name, check_type)),
            (self.probe_duration, (name, check_type)),
            (self.missed_slots, (name,)),
            (self.doubtful_failures, (name,)),
        ):
            try:
                metric.remove(*labels)
            except KeyError:
                pass
        for result in RESULTS_BY_TYPE.get(check_type, ("ok",)):
            try:
                self.probes.remove(name, check_type, result)
            except KeyError:
                pass

    def observe_probe(self, name: str, check_type: str, result: str, ok: bool, duration: float, lateness: float) -> None:
        self.probe_success.labels(check=name, type=check_type).set(1 if ok else 0)
        self.probe_duration.labels(check=name, type=check_type).set(duration)
        self.probes.labels(check=name, type=check_type, result=result).inc()
        self.check_start_lateness.observe(max(0.0, lateness))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics (Prometheus text format) and GET /healthz (JSON) on host:port; port 0 picks one."""

    def __init__(self, metrics: AgentMetrics, host: str, port: int, health: Callable[[], dict]):
        self._metrics = metrics
        self._host = host
        self._port = port
        self._health = health
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self._health()), content_type="application/json")
