"""Database models and engine.

The schema exists only through the Alembic migrations in ``migrations/``; these models are the
single description both the code and ``alembic revision --autogenerate`` compare against.
Timestamps are stored as UTC and always come back timezone-aware, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    LargeBinary,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that migrations name the same constraint on every back end.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timestamp that is written as UTC and read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Agent(Base):
    """A vantage point. Only a hash of its token is kept (issue 4: a leaked database leaks no token)."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The hash the config file gave when it was last applied: a token rotated or revoked with the
    # CLI or the API stays so across restarts until the config's own token changes.
    config_token_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clock_offset_seconds: Mapped[float | None] = mapped_column(Float)


class Check(Base):
    """A check: what agents probe, how often, and which agents are expected to report.

    Checks come from the config file (provisioned) or the admin API. `entry` is the check as given
    there; `spec` and `agents` are what agents receive and who is expected. `config_hash` is the
    hash of the config entry last applied (None: made through the API), so that a restart applies
    only what changed in the file and keeps what the API changed since. A removed check keeps its
    row (`removed_at`): its results stay evidence, and late results of slots before the removal
    are still accepted."""

    __tablename__ = "checks"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    interval_seconds: Mapped[float] = mapped_column(Float)
    spec: Mapped[dict] = mapped_column(JSON)
    agents: Mapped[list] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    entry: Mapped[dict | None] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ContractPolicy(Base):
    """A contract policy evaluated live (a preset applied to checks), from the config file's
    `policies:` or the admin API; provenance and removal as for checks."""

    __tablename__ = "policies"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    entry: Mapped[dict | None] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Result(Base):
    """One agent's vote in one slot of one check, as the agent observed it: the evidence
    everything else is derived from.

    One vote per agent, check and slot, and the first one stored stands: an agent cannot take back
    a failure it reported (that would erase a verified outage after the fact). The unique
    constraint enforces it across collector replicas racing on one database; its columns start
    with (check, slot) so that it also serves every read of a check's slots. Result ids are the
    agent's own (unique per agent), so no agent can spend, and thereby suppress, another's."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    result_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(64), ForeignKey("agents.id"))
    check: Mapped[str] = mapped_column(String(128))
    slot: Mapped[datetime] = mapped_column(UTCDateTime())
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # ok, but slower than the check's degraded_after (never with ok false); false for results of
    # agents that do not say
    degraded: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # the result's other details as the agent sent them (protocol.wire.DETAIL_FIELDS: phases,
    # final_url, redirects, cert_not_after, rcode, answers, steps, failed_step, scheduled); NULL
    # when it sent none. Evidence to show, never read by the rules.
    extra: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        UniqueConstraint("agent_id", "result_id", name="uq_results_agent_id_result_id"),
        UniqueConstraint("check", "slot", "agent_id", name="uq_results_check_slot_agent_id"),
    )


class AgentKey(Base):
    """An agent's Ed25519 public key (docs/evidence.md, "Keys"). Never deleted: a rotated key stays
    so that the batches it signed stay verifiable; `log_index` is its `agent_key` log entry."""

    __tablename__ = "agent_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), ForeignKey("agents.id"))
    key_id: Mapped[str] = mapped_column(String(8))
    public_key: Mapped[str] = mapped_column(String(64))       # "ed25519:<base64>"
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    registered_by: Mapped[str] = mapped_column(String(16))    # "config", "cli" or "api"
    log_index: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_log_index: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("agent_id", "key_id", name="uq_agent_keys_agent_id_key_id"),
        UniqueConstraint("agent_id", "public_key", name="uq_agent_keys_agent_id_public_key"),
    )


class Batch(Base):
    """An accepted batch of results (docs/evidence.md, "On the wire"): what it takes to rebuild its
    signed statement and log entry. `digests` is the hex SHA-256 of each result's canonical bytes,
    concatenated in the batch's order (the statement covers every result sent, duplicates too).
    `key_id`, `signature` and `prev` are NULL for an unsigned batch."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), ForeignKey("agents.id"))
    batch_sha256: Mapped[str] = mapped_column(String(64))
    prev: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(8))
    signature: Mapped[str | None] = mapped_column(String(88))
    count: Mapped[int] = mapped_column(Integer)
    digests: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    log_index: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (Index("ix_batches_agent_id_log_index", "agent_id", "log_index"),)


class BatchMember(Base):
    """The link from a stored result to the batch that brought it: its position in the batch.
    `row_id` is the result's row (Result.id) without a foreign key, because raw results are rolled
    up and deleted after `retention.raw` while the batch, its digests and its log entry stay."""

    __tablename__ = "batch_members"

    batch_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), ForeignKey("batches.id"),
                                          primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    row_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)


class LogEntry(Base):
    """One entry of the append-only Merkle log (docs/evidence.md, "The log"): its RFC 8785 bytes
    and RFC 6962 leaf hash. Rows are only ever inserted, at the index LogState hands out."""

    __tablename__ = "log_entries"

    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(String(32))
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LogState(Base):
    """The log's size, one row. Appending takes the next index with an UPDATE of this row, which
    holds its row lock until the transaction ends: collectors sharing one database append one
    after the other, and an index whose transaction rolls back is handed out again."""

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class SetAsideResult(Base):
    """A result that arrived when one vote per agent, check and slot was not yet enforced and was a
    second vote of its agent in its slot: moved here by migration 0005 rather than deleted, so the
    evidence stays readable. `kept_id` is the results row that stands (the first stored)."""

    __tablename__ = "set_aside_results"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    result_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(64))
    check: Mapped[str] = mapped_column(String(128))
    slot: Mapped[datetime] = mapped_column(UTCDateTime())
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kept_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    reason: Mapped[str] = mapped_column(String(32))
    set_aside_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IngestMark(Base):
    """Which slots of a check a stored batch touched: written in the batch's own transaction, one
    row per check and stretch of slots, not per result. The evaluating replica reads the marks the
    other replicas (and `uptime-collector import`) wrote to know which rounds to judge again; its
    own ingest tells it directly."""

    __tablename__ = "ingest_marks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    replica: Mapped[str] = mapped_column(String(128))
    check: Mapped[str] = mapped_column(String(128))
    slot_from: Mapped[datetime] = mapped_column(UTCDateTime())
    slot_to: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OutageWindow(Base):
    """A verified outage window of one policy, with the rule version and evidence that made it."""

    __tablename__ = "outage_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(String(128))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rule_hash: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_outage_windows_policy_start", "policy", "start", unique=True),)


class RoundRun(Base):
    """A run of consecutive rounds of one policy with the same non-UP verdict (FAILED, UNKNOWN),
    kept by the evaluator as it settles rounds (collector.rules.runs): the status page's bars and
    current state read these instead of every result."""

    __tablename__ = "round_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    policy: Mapped[str] = mapped_column(String(128))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    verdict: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index("ix_round_runs_policy_start", "policy", "start"), Index("ix_round_runs_end", "end"))


class PolicyProgress(Base):
    """How far the evaluator has judged each policy's rounds: the end of its last settled round.
    A round past it has no verdict yet, so the status page shows it as unknown, never as up."""

    __tablename__ = "policy_progress"

    policy: Mapped[str] = mapped_column(String(128), primary_key=True)
    judged_until: Mapped[datetime] = mapped_column(UTCDateTime())


class Maintenance(Base):
    """A maintenance announcement for one policy, judged against the policy's contract rules.

    Evidence, so append-only: `recorded_at` is the collector's clock when it was recorded (notice
    is judged from it), `stated_announced` an earlier time the operator states (counted only where
    the policy trusts stated notice). A cancellation sets `cancelled_at` (collector's clock) and
    keeps the row; nothing else is ever updated, and a change is a cancellation plus a new row."""

    __tablename__ = "maintenance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(16))           # "api" or "cli"
    author: Mapped[str] = mapped_column(String(128), default="")   # free text, as the recorder gave it
    stated_announced: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    cancel_reason: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """The outbox: a notification is written in the same transaction as the decision behind it,
    then delivered at least once (retried with backoff) by whichever collector claims it first."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One notification per sink and fact, however often the fact is re-derived (e.g. the same
    # window verified again after a late result): "sink|event|policy|start|...".
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    sink: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class RoundSummary(Base):
    """One slot of one check, rolled up from the raw results: which agents succeeded and which
    failed (an agent's verdict in a slot is success if any of its attempts succeeded). That is all
    the rules need, so reports from summaries equal reports from raw results, for years."""

    __tablename__ = "round_summaries"

    check: Mapped[str] = mapped_column(String(128), primary_key=True)
    slot: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    succeeded: Mapped[list] = mapped_column(JSON)
    failed: Mapped[list] = mapped_column(JSON)
    # the agents of `succeeded` whose success was degraded (NULL: none), so that a DEGRADED round
    # is still DEGRADED once its raw results are rolled up
    degraded: Mapped[list | None] = mapped_column(JSON(none_as_null=True))


class Lease(Base):
    """Periodic work that must run once across collector replicas holds a lease: claimed and
    renewed by a conditional UPDATE, taken over by another replica once it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


def default_sqlite_url(data_dir: str | Path = "data") -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir) / 'collector.sqlite'}"


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the status page read while ingest writes; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


class Incident(Base):
    """An incident an operator declared on the status page: what is affected, how badly, and the
    updates posted on it (IncidentUpdate, append-only). `created_at`, `resolved_at` and every
    update's time are the collector's clock, never the caller's. `resolved_at` is set once, by the
    "resolved" update; `updated_at` is the newest update's time (Numezis SaaS SLA §6: updates every
    2-4 hours, so the page shows how old the latest one is); the post-mortem link is set once."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    impact: Mapped[str] = mapped_column(String(16))           # none, minor, major, critical
    policies: Mapped[list] = mapped_column(JSON)              # the services (policies) affected
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(16))       # "api" or "cli"
    author: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    postmortem_url: Mapped[str | None] = mapped_column(Text)
    postmortem_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    postmortem_by: Mapped[str | None] = mapped_column(String(16))


class IncidentUpdate(Base):
    """One update of an incident: its status then and what the operator said. Only ever inserted."""

    __tablename__ = "incident_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("incidents.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))           # investigating, identified, monitoring, resolved
    message: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(16))      # "api" or "cli"
    author: Mapped[str] = mapped_column(String(128), default="")


class IncidentLink(Base):
    """An incident's link to a verified outage window or a maintenance announcement. Only ever
    inserted. No foreign key to outage_windows: the evaluator replaces a window's row when the
    window changes (an open window that ends gets a new row), so the window is also kept by what
    names it across that, its policy and start; maintenance rows are never deleted."""

    __tablename__ = "incident_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))             # "window" or "maintenance"
    target_id: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(128))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    linked_by: Mapped[str] = mapped_column(String(16))

    __table_args__ = (UniqueConstraint("incident_id", "kind", "target_id",
                                       name="uq_incident_links_incident_id_kind_target_id"),)


class MaintenanceSeries(Base):
    """Recurring maintenance: an RFC 5545 RRULE from `start` (DTSTART) in `timezone`, each
    occurrence lasting `duration_seconds` (collector.rules.recurrence). Evidence like a one-off
    announcement: `recorded_at` is the collector's clock and every occurrence's notice is judged
    from it; a cancellation sets `cancelled_at` and keeps the row; nothing else is ever updated."""

    __tablename__ = "maintenance_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    rrule: Mapped[str] = mapped_column(Text)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(16))           # "api" or "cli"
    author: Mapped[str] = mapped_column(String(128), default="")
    stated_announced: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    cancel_reason: Mapped[str | None] = mapped_column(Text)


class MaintenanceOccurrenceCancellation(Base):
    """One occurrence of a series cancelled (by its start, UTC): it excludes nothing. One row per
    occurrence: the first cancellation stands."""

    __tablename__ = "occurrence_cancellations"
    __table_args__ = (UniqueConstraint("series_id", "start", name="uq_occurrence_cancellations_series_id_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("maintenance_series.id"), index=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cancelled_by: Mapped[str] = mapped_column(String(16))
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
