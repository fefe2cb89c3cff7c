"""The running collector's state: database, live evaluator, policies, in-memory views for metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from collector import notify, partitions, store
from collector.checks import check_set, policy_for_entry, policy_set, provisioned_policy_rows, provisioned_rows
from collector.config import CheckEntry, CollectorConfig, ConfigError, PolicyEntry
from collector.db import Check, ContractPolicy, make_engine, make_sessionmaker
from collector.evaluator import RESCAN_ON_LEAD, LiveEvaluator, LivePolicy, WindowEvent
from collector.metrics import CollectorMetrics, LastProbe
from collector.notify import Deliverer
from collector.shards import ShardClaimer, shard_lease, shard_of
from collector.rules.policy import Policy, PolicyError

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


def build_live_policies(config: CollectorConfig, checks: dict[str, CheckEntry] | None = None,
                        contracts: list[PolicyEntry] | None = None, *, strict: bool = True) -> list[LivePolicy]:
    """Every check in force as a policy of its own (issue 2's rule), then the contract policies
    (the config file's, or those in force in the database). With `strict`, a contract that does
    not fit the checks stops start-up; otherwise it is logged and left out."""
    checks = checks if checks is not None else {c.name: c for c in config.checks}
    contracts = contracts if contracts is not None else list(config.policies)
    live = [LivePolicy(policy_for_check(c), expected_agents(config, [c.name], checks)) for c in checks.values()]
    for i, entry in enumerate(contracts):
        try:
            policy = policy_for_entry(entry, checks, i)
        except ConfigError as err:
            if strict:
                raise
            log.error("policy %s is not evaluated: %s", entry.name, err)
            continue
        live.append(LivePolicy(policy, expected_agents(config, policy.components, checks)))
    return live


def expected_agents(config: CollectorConfig, components: list[str],
                    checks: dict[str, CheckEntry] | None = None) -> dict[str, list[str]]:
    """The agents each component's rounds wait for: the check's assignment. Where the config names
    no agents at all (e.g. only tokens registered with `agents add`, or imported evidence), the
    policy's own rule applies instead (its expected count, or the agents seen reporting)."""
    checks = checks if checks is not None else {c.name: c for c in config.checks}
    out = {}
    for name in components:
        if name in checks and config.agents_of(checks[name]):
            out[name] = config.agents_of(checks[name])
    return out


@dataclass
class CollectorState:
    config: CollectorConfig
    engine: AsyncEngine
    sessionmaker: async_sessionmaker
    evaluator: LiveEvaluator
    metrics: CollectorMetrics
    policies: dict[str, Policy]
    checks: dict[str, CheckEntry]  # in force: what agents are assigned and ingest accepts
    removed_checks: dict[str, datetime] = field(default_factory=dict)  # name -> when it was removed
    check_sources: dict[str, str] = field(default_factory=dict)
    check_updated: dict[str, datetime] = field(default_factory=dict)
    checks_version: Any = None
    contract_entries: dict[str, PolicyEntry] = field(default_factory=dict)
    policy_sources: dict[str, str] = field(default_factory=dict)
    last_probe: dict[tuple[str, str], LastProbe] = field(default_factory=dict)
    agent_contact: dict[str, AgentContact] = field(default_factory=dict)
    # agents that sign with a key nobody registered (said once each; their batches kept unsigned)
    unregistered_signers: set[str] = field(default_factory=set)
    policy_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    leases: dict[str, bool] = field(default_factory=dict)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
    deliverer: Deliverer | None = None
    shard_claimer: ShardClaimer | None = None  # the evaluation shards this collector holds
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
        evaluator.outbox = state.enqueue_window_events
        evaluator.replica = state.instance_id
        state.deliverer = Deliverer(sessionmaker, config.notifications)
        state.shard_claimer = ShardClaimer(sessionmaker, state.instance_id, config.evaluation.shards)
        metrics.attach(state)
        return state

    # --- notifications -------------------------------------------------------------------------

    def report_url(self, policy: str, moment: datetime) -> str:
        tz = self.policies[policy].tz
        return f"{self.config.public_url.rstrip('/')}/policies/{policy}/{moment.astimezone(tz):%Y-%m}"

    async def enqueue_window_events(self, session: AsyncSession, events: list[WindowEvent]) -> None:
        for event in events:
            if event.kind not in ("verified", "resolved"):
                continue
            rounds = event.evidence.get("rounds", [])
            failed = sorted({a for r in rounds for c in r["components"].values() for a in c["failed"]})
            missing = sorted({a for r in rounds for c in r["components"].values() for a in c["missing"]})
            minutes = (event.end - event.start).total_seconds() / 60 if event.end else None
            payload = {
                "policy": event.policy,
                "service": self.policies[event.policy].description or event.policy,
                "window": {"start": event.start, "end": event.end, "minutes": minutes},
                "evidence": {"rounds": len(rounds), "agents_failed": failed, "agents_missing": missing,
                             "policy_hash": event.evidence.get("policy_hash")},
                "report_url": self.report_url(event.policy, event.start),
            }
            await notify.enqueue(session, self.config.notifications, f"outage.{event.kind}",
                                 f"{event.policy}|{event.start.isoformat()}", payload)

    async def refresh_status(self, now: datetime | None = None) -> None:
        """Month-to-date report per policy: gauges, budget thresholds, maintenance start and end."""
        from collector.reporting import load_maintenance, report_from_db
        from collector.rules.periods import period_of

        now = now or datetime.now(timezone.utc)
        sinks = self.config.notifications
        for name, policy in self.policies.items():
            period = period_of(now, policy.tz)
            async with self.sessionmaker() as session:
                try:
                    report = await report_from_db(session, policy, period, now=now,
                                                  expected_by_component=self.expected_by_component(policy))
                except (PolicyError, ValueError) as err:  # e.g. a preset whose target must be set
                    log.debug("no month-to-date report for %s: %s", name, err)
                    continue
                self.policy_status[name] = report
                allowed = report.get("allowed_downtime_minutes")
                downtime = report.get("downtime_minutes") or 0
                if allowed is not None and downtime > 0:
                    used = downtime / allowed if allowed > 0 else float("inf")
                    for threshold in self.config.evaluation.budget_thresholds:
                        if used >= threshold:
                            await notify.enqueue(session, sinks, "budget.threshold", f"{name}|{period}|{threshold}", {
                                "policy": name, "period": period, "threshold": threshold,
                                "budget_used_percent": round(used * 100, 2) if allowed > 0 else None,
                                "downtime_minutes": downtime, "allowed_downtime_minutes": allowed,
                                "availability_percent": report.get("availability_percent"),
                                "report_url": self.report_url(name, now),
                            })
                for m in await load_maintenance(session, name):
                    if m.end < now - timedelta(days=1):
                        continue  # history: nobody needs to be told about it now
                    for event, moment in (("maintenance.started", m.start), ("maintenance.ended", m.end)):
                        if moment <= now:
                            await notify.enqueue(session, sinks, event, f"{name}|{m.kind}|{m.start.isoformat()}", {
                                "policy": name, "maintenance": m.to_dict(), "report_url": self.report_url(name, m.start),
                            })
                await session.commit()

    # --- replicas -------------------------------------------------------------------------------

    async def hold_lease(self, name: str, now: datetime, ttl: float | None = None) -> bool:
        ttl = ttl if ttl is not None else self.lease_ttl()
        async with self.sessionmaker() as session:
            held = await store.hold_lease(session, name, self.instance_id, ttl, now)
            await session.commit()
        if held != self.leases.get(name, False):
            log.info("%s lease %s by this collector (%s)", name, "taken" if held else "held elsewhere", self.instance_id)
        self.leases[name] = held
        return held

    def lease_ttl(self) -> float:
        return max(self.config.lease_ttl, 3 * self.config.evaluation.interval)

    async def hold_shards(self, now: datetime) -> frozenset[int]:
        """Renew, take and give back evaluation shards (collector.shards); the policies of a shard
        taken from another collector are judged again from what the database says."""
        before = self.shard_claimer.held
        claim = await self.shard_claimer.claim(now, self.lease_ttl())
        for n in range(self.shard_claimer.shards):
            self.leases[shard_lease(n)] = n in claim.held
        gained = claim.held - before
        if gained:
            self.evaluator.take_over(self.policies_of(gained))
        return claim.held

    async def holding_shards(self, work: Awaitable[Any]) -> Any:
        """Await `work` (an evaluation pass), renewing the shard leases every evaluation interval
        while it runs, so that a pass longer than the lease ttl (thousands of policies on a busy
        machine) does not hand its shards to another collector half-way. SQLite is one process's
        database: nobody else could take them."""
        if self.engine.dialect.name == "sqlite" or self.shard_claimer is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.config.evaluation.interval)
                if done:
                    return task.result()
                try:
                    lost = await self.shard_claimer.renew(datetime.now(timezone.utc), self.lease_ttl())
                except Exception:  # the database is away: the pass will say so; the leases may lapse
                    log.warning("could not renew the evaluation shards during a pass", exc_info=True)
                    continue
                for n in lost:
                    self.leases[shard_lease(n)] = False
        except asyncio.CancelledError:
            task.cancel()
            raise

    def policies_of(self, shards: frozenset[int] | set[int]) -> set[str]:
        """Names of the policies in force that belong to `shards`."""
        count = self.config.evaluation.shards
        return {name for name in self.policies if shard_of(name, count) in shards}

    @property
    def shards_held(self) -> frozenset[int]:
        return self.shard_claimer.held if self.shard_claimer is not None else frozenset()

    async def release_leases(self) -> None:
        """On a clean stop another replica takes over at once instead of after the lease expires."""
        try:
            async with self.sessionmaker() as session:
                for name, held in self.leases.items():
                    if held:
                        await store.release_lease(session, name, self.instance_id)
                await session.commit()
            if self.shard_claimer is not None:
                await self.shard_claimer.release()  # and this collector's own lease: one fewer live
        except Exception:  # the database may be gone; the leases then simply expire
            log.warning("could not release leases at shutdown")

    async def expire_raw_results(self) -> int:
        """Raw results older than `retention.raw` summarised per round, then removed: on
        PostgreSQL the months wholly past it by dropping their partitions, the rest row by row;
        then the partitions of the months ingest writes to are made (collector.partitions)."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.config.retention.raw)
        expired = await partitions.expire_partitions(self.sessionmaker, cutoff)
        total = expired.results
        while not expired.deferred:
            async with self.sessionmaker() as session:
                removed = await store.roll_up_and_expire(session, cutoff)
                await session.commit()
            total += removed
            if removed == 0:
                break
        async with self.sessionmaker() as session:
            # ingest marks matter only until the evaluating replica has scanned them
            await store.expire_marks(session, datetime.now(timezone.utc) - 2 * RESCAN_ON_LEAD)
            await session.commit()
        if total:
            log.info("retention: %d raw results older than %s summarised per round and removed", total, cutoff.isoformat())
        await self.ensure_result_partitions()
        return total

    async def ensure_result_partitions(self) -> list[str]:
        """The results partitions of the months ingest can write to (PostgreSQL; at start-up and
        from the retention job)."""
        return await partitions.ensure_partitions(self.sessionmaker, datetime.now(timezone.utc),
                                                  max_result_age=self.config.ingest.max_result_age,
                                                  retention_raw=self.config.retention.raw)

    def expected_by_component(self, policy: Policy) -> dict[str, list[str]]:
        return expected_agents(self.config, policy.components, self.checks)

    @property
    def contracts(self) -> list[Policy]:
        """The contract policies in force (not the per-check ones)."""
        entries = self.contract_entries if self.checks_version is not None else {p.name: p for p in self.config.policies}
        return [self.policies[name] for name in entries if name in self.policies]

    async def sync_config(self) -> None:
        """Make the database agree with the config: agents and their token hashes, checks (what the
        admin API changed since the file last changed stays); then load the checks in force."""
        async with self.sessionmaker() as session:
            await store.sync_agents(session, [(a.id, a.token_hash) for a in self.config.agents])
            await store.sync_provisioned(session, Check, provisioned_rows(self.config))
            await store.sync_provisioned(session, ContractPolicy, provisioned_policy_rows(self.config))
            await session.commit()
        await self.ensure_result_partitions()
        await self.reload_checks()
        await self.refresh_contacts()

    async def reload_checks(self, force: bool = False) -> bool:
        """Take up the checks and contract policies in the database when they changed (through
        this replica's API or another's): assignments, ingest and evaluation follow. True if
        anything changed."""
        async with self.sessionmaker() as session:
            version = (await store.provisioned_version(session, Check),
                       await store.provisioned_version(session, ContractPolicy))
            if version == self.checks_version and not force:
                return False
            found = check_set(await store.load_provisioned(session, Check))
            contracts = policy_set(await store.load_provisioned(session, ContractPolicy))
        live = build_live_policies(self.config, found.active, list(contracts.active.values()), strict=False)
        self.evaluator.replace_policies(live)
        self.policies = {lp.name: lp.policy for lp in live}
        self.checks = found.active
        self.removed_checks = {name: when for name, (_entry, when) in found.removed.items()}
        self.check_sources, self.check_updated = found.source, found.updated
        self.contract_entries, self.policy_sources = contracts.active, contracts.source
        self.checks_version = version
        return True

    async def refresh_contacts(self) -> None:
        """Agents' last contact and clock offset as the database has them: after a restart, and
        from what other replicas saw, so that a silent agent's series never vanishes."""
        async with self.sessionmaker() as session:
            agents = await store.list_agents(session)
        for a in agents:
            if a.last_seen is None:
                continue
            contact = self.agent_contact.get(a.id)
            if contact is None:
                self.agent_contact[a.id] = AgentContact(a.last_seen, a.clock_offset_seconds)
            elif a.last_seen > contact.last_seen:
                contact.last_seen = a.last_seen
                if a.clock_offset_seconds is not None:
                    contact.clock_offset = a.clock_offset_seconds

    def note_results(self, agent: str, rows: list[dict[str, Any]]) -> None:
        now = datetime.now(timezone.utc)
        contact = self.agent_contact.setdefault(agent, AgentContact(now))
        contact.last_seen = now
        for row in rows:
            key = (row["check"], agent)
            prev = self.last_probe.get(key)
            if prev is None or row["slot"] >= prev.slot:
                self.last_probe[key] = LastProbe(row["ok"], row["latency_ms"], row["slot"])
        for check, stretches in store.marks_of(rows).items():
            for first, last in stretches:
                self.evaluator.mark_dirty(check, first, last)
