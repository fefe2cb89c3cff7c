"""The running collector's state: database, live evaluator, policies, in-memory views for metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from collector import store
from collector.config import CheckEntry, CollectorConfig, ConfigError, PolicyEntry
from collector.db import make_engine, make_sessionmaker
from collector.evaluator import LiveEvaluator, LivePolicy, WindowEvent
from collector.metrics import CollectorMetrics, LastProbe
from collector.rules.policy import Policy, PolicyError, check_intervals, load_policy

log = logging.getLogger("uptime.collector")

VERSION = "0.1.0"


@dataclass
class AgentContact:
    last_seen: datetime
    clock_offset: float | None = None


def policy_for_check(check: CheckEntry) -> Policy:
    """Issue 2's rule for a single check, expressed as a policy of the evaluation core."""
    rule = check.outage
    return Policy.model_validate(
        {
            "name": check.name,
            "description": f"{check.type} check {check.name}: quorum {rule.quorum}",
            "components": [check.name],
            "interval": check.interval,
            "quorum": {"mode": rule.quorum, "min_reporting": rule.min_reporting, "k": rule.k},
            "compose": "any",
            "min_duration": rule.min_duration,
            "timezone": "UTC",
        }
    )


def policy_for_entry(entry: PolicyEntry, checks: dict[str, CheckEntry], index: int) -> Policy:
    overrides: dict[str, Any] = {"name": entry.name}
    for key in ("components", "target_percent", "commenced", "timezone"):
        value = getattr(entry, key)
        if value is not None:
            overrides[key] = value
    try:
        policy = load_policy(entry.preset, **overrides)
    except PolicyError as err:
        raise ConfigError(f"policies.{index}: {err}") from None
    missing = [c for c in policy.components if c not in checks]
    if missing:
        raise ConfigError(
            f"policies.{index}.components: {', '.join(missing)} not among the configured checks "
            f"({', '.join(checks) or 'none'}); name the checks after the components or set components:"
        )
    try:
        check_intervals(policy, {c: checks[c].interval for c in policy.components})
    except PolicyError as err:
        raise ConfigError(f"policies.{index}: {err}") from None
    return policy


def build_live_policies(config: CollectorConfig) -> list[LivePolicy]:
    checks = {c.name: c for c in config.checks}
    live = [LivePolicy(policy_for_check(c), {c.name: config.agents_of(c)}) for c in config.checks]
    for i, entry in enumerate(config.policies):
        policy = policy_for_entry(entry, checks, i)
        live.append(LivePolicy(policy, {c: config.agents_of(checks[c]) for c in policy.components}))
    return live


@dataclass
class CollectorState:
    config: CollectorConfig
    engine: AsyncEngine
    sessionmaker: async_sessionmaker
    evaluator: LiveEvaluator
    metrics: CollectorMetrics
    policies: dict[str, Policy]
    checks: dict[str, CheckEntry]
    last_probe: dict[tuple[str, str], LastProbe] = field(default_factory=dict)
    agent_contact: dict[str, AgentContact] = field(default_factory=dict)
    version: str = VERSION

    @classmethod
    def create(
        cls,
        config: CollectorConfig,
        on_event: Callable[[WindowEvent], Awaitable[None] | None] | None = None,
    ) -> "CollectorState":
        live = build_live_policies(config)
        engine = make_engine(config.database_url)
        sessionmaker = make_sessionmaker(engine)
        metrics = CollectorMetrics()

        async def _on_event(event: WindowEvent) -> None:
            metrics.windows.labels(event.policy, event.kind).inc()
            log.info("outage %s: policy=%s start=%s end=%s", event.kind, event.policy,
                     event.start.isoformat(), event.end.isoformat() if event.end else "open")
            if on_event is not None:
                result = on_event(event)
                if result is not None:
                    await result

        evaluator = LiveEvaluator(sessionmaker, live, config.evaluation.grace, _on_event)
        state = cls(
            config=config,
            engine=engine,
            sessionmaker=sessionmaker,
            evaluator=evaluator,
            metrics=metrics,
            policies={lp.name: lp.policy for lp in live},
            checks={c.name: c for c in config.checks},
        )
        metrics.attach(state)
        return state

    async def sync_config(self) -> None:
        """Make the database agree with the config: agents and their token hashes, checks."""
        async with self.sessionmaker() as session:
            await store.sync_agents(session, [(a.id, a.token_hash) for a in self.config.agents])
            await store.sync_checks(
                session,
                [(c.name, c.type, c.interval, c.prober_spec(), self.config.agents_of(c)) for c in self.config.checks],
            )
            await session.commit()

    def note_results(self, agent: str, rows: list[dict[str, Any]]) -> None:
        now = datetime.now(timezone.utc)
        contact = self.agent_contact.setdefault(agent, AgentContact(now))
        contact.last_seen = now
        for row in rows:
            key = (row["check"], agent)
            prev = self.last_probe.get(key)
            if prev is None or row["slot"] >= prev.slot:
                self.last_probe[key] = LastProbe(row["ok"], row["latency_ms"], row["slot"])
            self.evaluator.mark_dirty(row["check"], row["slot"])
