"""The agent's own Prometheus metrics, on a registry per Agent instance (several agents can
share a process), and the small aiohttp server that exposes them at GET /metrics."""
from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent.probers import PHASES_BY_TYPE, RESULTS_BY_TYPE, ProbeResult

NAMESPACE = "uptime_agent"
# ICMP echo round trips on loopback take tens of microseconds, across continents hundreds of ms.
ECHO_RTT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Start lateness is measured from each probe's scheduled time (slot + the check's offset, see
# schedule.spread), so spreading checks over their slots does not count as lateness: scheduler and
# admission delay plus the configured jitter, milliseconds when healthy; a probe later than
# schedule.max_lateness is not started (a missed slot), so the top buckets see only jitter.
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
            "How long after its scheduled time (aligned slot + the check's offset) a probe started "
            "(scheduler and admission delay plus jitter)",
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
        self.probes_in_flight = Gauge("probes_in_flight", "Probes running now (at most schedule.max_in_flight)",
                                      namespace=ns, registry=r)
        self.probes_waiting = Gauge("probes_waiting", "Due probes waiting for room under schedule.max_in_flight",
                                    namespace=ns, registry=r)
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
        self.probe_degraded = Gauge(
            "probe_degraded", "1 if the check's last probe was ok but slower than its degraded_after, else 0",
            ["check", "type"], namespace=ns, registry=r,
        )
        self.probe_phase = Gauge(
            "probe_phase_seconds", "Phase times of the check's last probe (every phase of its type, 0 where "
            "it did not happen)", ["check", "type", "phase"], namespace=ns, registry=r,
        )
        self.journey_step_success = Gauge(
            "journey_step_success", "1 if the step passed in the journey's last run, 0 if it failed or did not run",
            ["check", "step"], namespace=ns, registry=r,
        )
        self.journey_step_duration = Gauge(
            "journey_step_duration_seconds", "Response time of the step in the journey's last run (NaN: did not run)",
            ["check", "step"], namespace=ns, registry=r,
        )
        self.icmp_echo_rtt = Histogram(
            "icmp_echo_rtt_seconds", "Round trip of every answered ICMP echo", ["check"], namespace=ns, registry=r,
            buckets=ECHO_RTT_BUCKETS,
        )
        # blackbox_exporter's own names, unprefixed, so that its users' queries and dashboards work
        # on these (with `check` where they have the scrape's target): each appears with the
        # check's first probe and is then set at every probe, every phase label included.
        self.bb_success = Gauge("probe_success", "Whether the check's last probe succeeded (blackbox_exporter)",
                                ["check", "type"], registry=r)
        self.bb_duration = Gauge("probe_duration_seconds", "How long the check's last probe took (blackbox_exporter)",
                                 ["check", "type"], registry=r)
        self.bb_http_status = Gauge("probe_http_status_code", "Response HTTP status code, 0 without a response",
                                    ["check"], registry=r)
        self.bb_http_phase = Gauge("probe_http_duration_seconds", "Duration of the HTTP request by phase, summed over "
                                   "all redirects", ["check", "phase"], registry=r)
        self.bb_http_redirects = Gauge("probe_http_redirects", "The number of redirects", ["check"], registry=r)
        self.bb_ssl_expiry = Gauge("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime "
                                   "(of the chain last presented)", ["check"], registry=r)
        self.bb_dns_lookup = Gauge("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in "
                                   "seconds", ["check"], registry=r)
        self.bb_dns_answers = Gauge("probe_dns_answer_rrs", "Returns number of entries in the answer resource record "
                                    "list (of the type asked)", ["check"], registry=r)
        self.bb_icmp_phase = Gauge("probe_icmp_duration_seconds", "Duration of the ICMP probe by phase (rtt: the mean "
                                   "round trip of the echoes answered)", ["check", "phase"], registry=r)
        self.bb_failed_regex = Gauge("probe_failed_due_to_regex", "Indicates if probe failed due to regex (HTTP "
                                     "body_match, TCP expect)", ["check"], registry=r)
        self._checks: dict[str, object] = {}  # name -> the check's definition (for its step names)
        self.info = Gauge("info", "Constant 1, labelled with the agent id", ["agent"], namespace=ns, registry=r)
        self.info.labels(agent=agent_id).set(1)
        for reason in DROP_REASONS:
            self.spool_dropped.labels(reason=reason)
        for reason in SHIP_FAILURE_REASONS:
            self.ship_failures.labels(reason=reason)

    def add_check(self, name: str, check_type: str, check: object | None = None) -> None:
        """Create the check's series (`check`: its definition, for a journey's step names)."""
        self.probe_success.labels(check=name, type=check_type)
        self.probe_duration.labels(check=name, type=check_type)
        for result in RESULTS_BY_TYPE.get(check_type, ("ok",)):
            self.probes.labels(check=name, type=check_type, result=result)
        self.missed_slots.labels(check=name)
        self.doubtful_failures.labels(check=name)
        self.probe_degraded.labels(check=name, type=check_type)
        for phase in PHASES_BY_TYPE.get(check_type, ()):
            self.probe_phase.labels(check=name, type=check_type, phase=phase)
        if check is not None:
            self._checks[name] = check

    def remove_check(self, name: str, check_type: str) -> None:
        """Forget a removed check's series, so its last value does not linger as if current."""
        check = self._checks.pop(name, None)
        series = [
            (self.probe_success, (name, check_type)),
            (self.probe_duration, (name, check_type)),
            (self.missed_slots, (name,)),
            (self.doubtful_failures, (name,)),
            (self.probe_degraded, (name, check_type)),
            (self.bb_success, (name, check_type)),
            (self.bb_duration, (name, check_type)),
            *((self.probes, (name, check_type, result)) for result in RESULTS_BY_TYPE.get(check_type, ("ok",))),
            *((self.probe_phase, (name, check_type, phase)) for phase in PHASES_BY_TYPE.get(check_type, ())),
            *((metric, (name,)) for metric in (self.bb_http_status, self.bb_http_redirects, self.bb_ssl_expiry,
                                               self.bb_dns_lookup, self.bb_dns_answers, self.bb_failed_regex,
                                               self.icmp_echo_rtt)),
            *((self.bb_http_phase, (name, phase)) for phase in PHASES_BY_TYPE["http"]),
            *((self.bb_icmp_phase, (name, phase)) for phase in ("rtt",)),
            *((metric, (name, step.name)) for step in getattr(check, "steps", None) or ()
              for metric in (self.journey_step_success, self.journey_step_duration)),
        ]
        for metric, labels in series:
            try:
                metric.remove(*labels)
            except KeyError:
                pass

    def observe_probe(self, name: str, check_type: str, result: str, ok: bool, duration: float, lateness: float,
                      outcome: ProbeResult | None = None) -> None:
        self.probe_success.labels(check=name, type=check_type).set(1 if ok else 0)
        self.probe_duration.labels(check=name, type=check_type).set(duration)
        self.probes.labels(check=name, type=check_type, result=result).inc()
        self.check_start_lateness.observe(max(0.0, lateness))
        self.bb_success.labels(check=name, type=check_type).set(1 if ok else 0)
        self.bb_duration.labels(check=name, type=check_type).set(duration)
        if outcome is not None:
            self._observe_details(name, check_type, outcome)

    def _observe_details(self, name: str, check_type: str, outcome: ProbeResult) -> None:
        """The type's own series, every label set at every probe (0 for a phase not reached)."""
        self.probe_degraded.labels(check=name, type=check_type).set(1 if outcome.degraded else 0)
        phases = outcome.phases or {}
        for phase in PHASES_BY_TYPE.get(check_type, ()):
            self.probe_phase.labels(check=name, type=check_type, phase=phase).set(phases.get(phase, 0.0))
        if outcome.cert is not None:
            self.bb_ssl_expiry.labels(check=name).set(outcome.cert.not_after.timestamp())
        if check_type == "http":
            self.bb_http_status.labels(check=name).set(outcome.status_code or 0)
            self.bb_http_redirects.labels(check=name).set(outcome.redirects or 0)
            for phase in PHASES_BY_TYPE["http"]:
                self.bb_http_phase.labels(check=name, phase=phase).set(phases.get(phase, 0.0))
            self.bb_dns_lookup.labels(check=name).set(phases.get("resolve", 0.0))
            self.bb_failed_regex.labels(check=name).set(1 if outcome.error == "body" else 0)
        elif check_type == "tcp":
            self.bb_dns_lookup.labels(check=name).set(phases.get("resolve", 0.0))
            self.bb_failed_regex.labels(check=name).set(1 if outcome.error == "expect" else 0)
        elif check_type == "dns":
            self.bb_dns_lookup.labels(check=name).set(phases.get("lookup", 0.0))
            self.bb_dns_answers.labels(check=name).set(len(outcome.answers or ()))
        elif check_type == "icmp":
            rtts = [rtt / 1000 for rtt in outcome.echo_rtts_ms or ()]
            self.bb_icmp_phase.labels(check=name, phase="rtt").set(sum(rtts) / len(rtts) if rtts else 0.0)
            histogram = self.icmp_echo_rtt.labels(check=name)
            for rtt in rtts:
                histogram.observe(rtt)
        elif check_type == "journey":
            ran = {step.name: step for step in outcome.steps or ()}
            check = self._checks.get(name)
            for step_name in [s.name for s in getattr(check, "steps", None) or ()] or list(ran):
                step = ran.get(step_name)
                self.journey_step_success.labels(check=name, step=step_name).set(1 if step is not None and step.ok else 0)
                latency = step.latency_ms / 1000 if step is not None and step.latency_ms is not None else float("nan")
                self.journey_step_duration.labels(check=name, step=step_name).set(latency)

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
