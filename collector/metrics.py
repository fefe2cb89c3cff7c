"""Collector metrics on a registry of its own (several collectors may live in one test process).

Process counters are plain prometheus-client counters; what describes the evidence (last probe per
check and agent, open outages, agents' last contact) is yielded at scrape time by a custom
collector from the collector's in-memory view, so a series never goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from collector.ingest import REFUSAL_REASONS

NAMESPACE = "uptime_collector"
# Label values known in advance get their series at start (at 0), so that rate() and increase()
# see the first event and dashboards show 0 rather than no data.
RESULT_OUTCOMES = ("accepted", "duplicate")
# Why an agent's request was refused: its token, too many failed tokens from its address, its
# rate, another agent's id, a body too large, a Content-Encoding that is broken or not supported,
# not UTF-8 JSON or of the wrong shape, results the rules refuse (each of those counted by its
# own reason in results_refused: REFUSAL_REASONS).
REJECTION_REASONS = ("token", "auth_rate_limit", "rate_limit", "identity", "too_large", "encoding", "not_json",
                     "schema", "invalid")
# Requests refused by a limit that protects the collector rather than for what they said: too
# many failed tokens from one address, too many anonymous heavy reads from one address, too many
# reports and claims being computed already.
THROTTLE_REASONS = ("auth_rate_limit", "public_rate_limit", "busy")
# Which token a request with a wrong one was after (agent endpoints, admin actions and private reads).
AUTH_FAILURE_KINDS = ("agent", "admin")
WINDOW_EVENT_KINDS = ("verified", "resolved", "withdrawn")


@dataclass
class LastProbe:
    ok: bool
    latency_ms: float | None
    slot: datetime


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.results = Counter(
            "results", "Results received from agents, by outcome.", ["outcome"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.requests = Counter(
            "ingest_requests", "Ingest requests, by HTTP status code.", ["code"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.rejections = Counter(
            "ingest_rejections", "Refused ingest requests, by reason.", ["reason"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.refused = Counter(
            "results_refused", "Results refused in a refused batch, by the reason of each.", ["reason"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.auth_failures = Counter(
            "auth_failures", "Requests refused for a wrong token, by the kind of token needed (agent, admin).", ["kind"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.throttled = Counter(
            "requests_throttled", "Requests refused by a limit protecting the collector, by reason "
            "(auth_rate_limit, public_rate_limit, busy).", ["reason"],
            namespace=NAMESPACE, registry=self.registry,
        )
        self.evaluation_seconds = Histogram(
            "evaluation_duration_seconds", "Time one evaluation tick took.",
            namespace=NAMESPACE, registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.windows = Counter(
            "outage_events", "Outage window transitions, by kind (verified, resolved, withdrawn).",
            ["policy", "kind"], namespace=NAMESPACE, registry=self.registry,
        )
        for outcome in RESULT_OUTCOMES:
            self.results.labels(outcome)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        for kind in AUTH_FAILURE_KINDS:
            self.auth_failures.labels(kind)
        for reason in THROTTLE_REASONS:
            self.throttled.labels(reason)

    def attach(self, state: Any) -> None:  # a CollectorState, which owns the metrics
        for policy in state.policies:
            for kind in WINDOW_EVENT_KINDS:
                self.windows.labels(policy, kind)
        self.registry.register(_StateCollector(state))


class _StateCollector(Collector):
    def __init__(self, state: Any) -> None:  # a CollectorState, read at scrape time
        self.state = state

    def collect(self) -> Iterator:
        success = GaugeMetricFamily(
            f"{NAMESPACE}_probe_success", "Whether the agent's last probe of the check succeeded (1) or failed (0).",
            labels=["check", "agent"],
        )
        latency = GaugeMetricFamily(
            f"{NAMESPACE}_probe_duration_seconds", "Duration of the agent's last probe of the check.",
            labels=["check", "agent"],
        )
        slot = GaugeMetricFamily(
            f"{NAMESPACE}_probe_slot_timestamp_seconds", "Scheduled slot of the agent's last probe of the check.",
            labels=["check", "agent"],
        )
        for (check, agent), probe in sorted(self.state.last_probe.items()):
            success.add_metric([check, agent], 1.0 if probe.ok else 0.0)
            if probe.latency_ms is not None:
                latency.add_metric([check, agent], probe.latency_ms / 1000.0)
            slot.add_metric([check, agent], probe.slot.timestamp())
        yield success
        yield latency
        yield slot

        outage = GaugeMetricFamily(
            f"{NAMESPACE}_outage_open", "1 while a verified outage window of the policy is open.", labels=["policy"],
        )
        since = GaugeMetricFamily(
            f"{NAMESPACE}_outage_start_timestamp_seconds", "Start of the policy's open outage window.", labels=["policy"],
        )
        for policy, start in sorted(self.state.evaluator.open_windows().items()):
            outage.add_metric([policy], 1.0 if start is not None else 0.0)
            if start is not None:
                since.add_metric([policy], start.timestamp())
        yield outage
        yield since

        seen = GaugeMetricFamily(
            f"{NAMESPACE}_agent_last_seen_timestamp_seconds", "When the agent last reached the collector.", labels=["agent"],
        )
        offset = GaugeMetricFamily(
            f"{NAMESPACE}_agent_clock_offset_seconds", "The agent's reported clock offset from the collector.", labels=["agent"],
        )
        skewed = GaugeMetricFamily(
            f"{NAMESPACE}_agent_clock_skewed",
            "1 when the agent's clock offset exceeds the collector's max_clock_offset.", labels=["agent"],
        )
        limit = self.state.config.max_clock_offset
        for agent, contact in sorted(self.state.agent_contact.items()):
            seen.add_metric([agent], contact.last_seen.timestamp())
            if contact.clock_offset is not None:
                offset.add_metric([agent], contact.clock_offset)
                skewed.add_metric([agent], 1.0 if abs(contact.clock_offset) > limit else 0.0)
        yield seen
        yield offset
        yield skewed
        # Month-to-date figures of each policy's SLA report, in Prometheus base units (seconds,
        # ratios 0-1); the report itself speaks minutes and percent.
        availability = GaugeMetricFamily(
            f"{NAMESPACE}_policy_availability_ratio",
            "Month-to-date availability of the policy's service, as a ratio 0-1 "
            "(period is the calendar month in the contract's time zone).",
            labels=["policy"],
        )
        target = GaugeMetricFamily(
            f"{NAMESPACE}_policy_target_ratio", "Availability the policy's contract promises, as a ratio 0-1.",
            labels=["policy"],
        )
        allowed = GaugeMetricFamily(
            f"{NAMESPACE}_policy_allowed_downtime_seconds",
            "Downtime the target allows in the whole current month (the monthly downtime budget).",
            labels=["policy"],
        )
        budget = GaugeMetricFamily(
            f"{NAMESPACE}_policy_downtime_budget_remaining_seconds",
            "Downtime left this month before the policy's target is missed (negative once missed).",
            labels=["policy"],
        )
        downtime = GaugeMetricFamily(
            f"{NAMESPACE}_policy_downtime_seconds",
            "Month-to-date verified downtime of the policy's service not excluded by maintenance.",
            labels=["policy"],
        )
        coverage = GaugeMetricFamily(
            f"{NAMESPACE}_policy_data_coverage_ratio", "Share of this month's rounds so far that are not UNKNOWN.",
            labels=["policy"],
        )
        for policy, report in sorted(self.state.policy_status.items()):
            if report.get("availability_percent") is not None:
                availability.add_metric([policy], float(report["availability_percent"]) / 100)
            if report.get("target_percent") is not None:
                target.add_metric([policy], float(report["target_percent"]) / 100)
            if report.get("allowed_downtime_minutes") is not None:
                allowed.add_metric([policy], float(report["allowed_downtime_minutes"]) * 60)
            if report.get("remaining_budget_minutes") is not None:
                budget.add_metric([policy], float(report["remaining_budget_minutes"]) * 60)
            downtime.add_metric([policy], float(report.get("downtime_minutes") or 0) * 60)
            if report.get("data_coverage_percent") is not None:
                coverage.add_metric([policy], float(report["data_coverage_percent"]) / 100)
        yield availability
        yield target
        yield allowed
        yield budget
        yield downtime
        yield coverage
        leader = GaugeMetricFamily(
            f"{NAMESPACE}_lease_held", "1 while this collector replica holds the lease for the periodic job.",
            labels=["lease"],
        )
        for name, held in sorted(self.state.leases.items()):
            leader.add_metric([name], 1.0 if held else 0.0)
        yield leader
        shards = GaugeMetricFamily(
            f"{NAMESPACE}_evaluation_shards_held",
            "Evaluation shards whose lease this collector holds (of evaluation.shards, shared by the collectors).",
        )
        shards.add_metric([], float(len(self.state.shards_held)))
        yield shards
        info = InfoMetricFamily(f"{NAMESPACE}_build", "Collector build information.")
        info.add_metric([], {"version": self.state.version})
        yield info
