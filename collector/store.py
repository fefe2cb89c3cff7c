"""Repositories: queries over the evidence and the windows. They never commit; callers own the
transaction (one per request or job), so a batch is stored whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from evidence import canonical as evidence_canonical
from evidence import keys as evidence_keys

from collector.db import (
    Agent, AgentKey, Batch, BatchMember, Check, LogEntry, LogState, ContractPolicy, IngestMark, Lease, Maintenance, OutageWindow, PolicyProgress, Result, RoundRun,
    RoundSummary, MaintenanceOccurrenceCancellation, MaintenanceSeries,
)
from collector.rules.model import Observation


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class IngestOutcome:
    accepted: int
    duplicates: int
    # Results refused because their agent already voted in that check and slot, as the 422's
    # `rejected` entries (index into the rows given, id, reason "conflict", error). A caller that
    # gets any must not commit: the batch is refused whole.
    conflicts: tuple[dict[str, Any], ...] = ()


async def sync_agents(session: AsyncSession, entries: Iterable[tuple[str, str | None]]) -> None:
    """Make the configured agents exist with their token hashes.

    What `agents add` (a new token) and `agents revoke` did stays across restarts while the
    config's entry for that agent is unchanged: otherwise restarting any replica would bring a
    stolen token back. Writing a new token into the config (a rotation there) makes the agent
    active again with that token."""
    now = utcnow()
    for agent_id, token_hash in entries:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            session.add(Agent(id=agent_id, token_sha256=token_hash, config_token_sha256=token_hash, created_at=now))
        elif token_hash and agent.config_token_sha256 != token_hash:
            agent.token_sha256 = agent.config_token_sha256 = token_hash
            agent.revoked_at = None


# Checks and contract policies are provisioned from the config file and changeable through the
# admin API; both tables have name, entry, config_hash, updated_at and removed_at.
Provisioned = type[Check] | type[ContractPolicy]


async def sync_provisioned(session: AsyncSession, model: Provisioned, rows: Sequence[dict[str, Any]]) -> None:
    """Apply the config file's entries (rows with at least name, entry, config_hash). An entry
    unchanged since it was last applied is left as it is, so what the admin API changed (or
    removed) since survives a restart; a changed entry wins over the API. An entry that left the
    config file is removed (its row stays: the evidence and windows made under it stay)."""
    now = utcnow()
    existing = {c.name: c for c in (await session.scalars(select(model))).all()}
    for row in rows:
        old = existing.get(row["name"])
        if old is None:
            session.add(model(**row, updated_at=now))
        elif old.entry is None or old.config_hash != row["config_hash"]:
            for key, value in row.items():
                setattr(old, key, value)
            old.removed_at, old.updated_at = None, now
    names = {row["name"] for row in rows}
    for name, old in existing.items():
        provisioned_once = old.config_hash is not None or old.entry is None
        if name not in names and provisioned_once and old.removed_at is None:
            old.removed_at = old.updated_at = now


async def load_provisioned(session: AsyncSession, model: Provisioned) -> list[Any]:
    return list((await session.scalars(select(model).order_by(model.name))).all())


async def provisioned_version(session: AsyncSession, model: Provisioned) -> tuple[int, datetime | None]:
    """Changes to a table, cheaply: every change moves a row's updated_at."""
    count, newest = (await session.execute(select(func.count(), func.max(model.updated_at)))).one()
    return count, newest


async def put_provisioned(session: AsyncSession, model: Provisioned, row: dict[str, Any]) -> bool:
    """Create or replace an entry through the API. True if it did not exist (or was removed)."""
    now = utcnow()
    old = await session.get(model, row["name"])
    if old is None:
        session.add(model(**row, updated_at=now))
        return True
    created = old.removed_at is not None
    for key, value in row.items():
        setattr(old, key, value)
    old.removed_at, old.updated_at = None, now
    return created


async def remove_provisioned(session: AsyncSession, model: Provisioned, name: str) -> Any | None:
    """Remove an entry: it no longer applies; what was stored under it stays. None if unknown."""
    old = await session.get(model, name)
    if old is None or old.removed_at is not None:
        return None
    old.removed_at = old.updated_at = utcnow()
    return old


async def register_agent(session: AsyncSession, agent_id: str, token_hash: str) -> bool:
    """Give an agent a new token (registering it if new). Returns True if the agent was new."""
    now = utcnow()
    agent = await session.get(Agent, agent_id)
    if agent is None:
        session.add(Agent(id=agent_id, token_sha256=token_hash, created_at=now))
        return True
    agent.token_sha256 = token_hash
    agent.revoked_at = None
    return False


async def revoke_agent(session: AsyncSession, agent_id: str) -> bool:
    """Revoke the agent's token; its results stay (they are evidence). False if unknown."""
    agent = await session.get(Agent, agent_id)
    if agent is None:
        return False
    agent.revoked_at = utcnow()
    return True


async def list_agents(session: AsyncSession) -> list[Agent]:
    return list((await session.scalars(select(Agent).order_by(Agent.id))).all())


async def add_maintenance(session: AsyncSession, policy: str, kind: str, start: datetime, end: datetime, note: str,
                          *, recorded_by: str, stated_announced: datetime | None = None, author: str = "",
                          now: datetime | None = None) -> Maintenance:
    """Record an announcement; `recorded_at` is this process's clock (`now` only for tests)."""
    row = Maintenance(policy=policy, kind=kind, start=start, end=end, note=note, recorded_at=now or utcnow(),
                      recorded_by=recorded_by, author=author, stated_announced=stated_announced)
    session.add(row)
    await session.flush()
    await log_maintenance(session, row)
    return row


def maintenance_fields(row: Maintenance) -> dict[str, Any]:
    """The stored record as its log entry holds it (docs/evidence.md, "The log": every column)."""
    return {name: getattr(row, name) for name in evidence_canonical.MAINTENANCE_FIELDS}


async def log_maintenance(session: AsyncSession, row: Maintenance) -> int:
    """Append the record as it stands now (recorded, or cancelled) to the log."""
    record = evidence_canonical.maintenance_record(maintenance_fields(row))
    return await append_log(session, evidence_canonical.maintenance_entry(record), "maintenance")


async def list_maintenance(session: AsyncSession, policy: str | None = None) -> list[Maintenance]:
    """Every announcement (cancelled ones too), of one policy or all, in start order."""
    stmt = select(Maintenance).order_by(Maintenance.start, Maintenance.id)
    if policy is not None:
        stmt = stmt.where(Maintenance.policy == policy)
    return list((await session.scalars(stmt)).all())


async def cancel_maintenance(session: AsyncSession, maintenance_id: int, *, cancelled_by: str,
                             reason: str) -> tuple[Maintenance | None, bool]:
    """Mark an announcement cancelled: (row, True); (row, False) when it already was; (None,
    False) when there is none. A conditional UPDATE, so two cancellations racing cannot both
    win and the first one's time and reason stand."""
    done = await session.execute(
        update(Maintenance).where(Maintenance.id == maintenance_id, Maintenance.cancelled_at.is_(None))
        .values(cancelled_at=utcnow(), cancelled_by=cancelled_by, cancel_reason=reason)
        .execution_options(synchronize_session=False))
    row = await session.get(Maintenance, maintenance_id, populate_existing=True)
    if done.rowcount == 1 and row is not None:
        await log_maintenance(session, row)
    return row, done.rowcount == 1


# -- recurring maintenance (collector.rules.recurrence) ----------------------------------------

SERIES_FIELDS = ("author", "cancel_reason", "cancelled_at", "cancelled_by", "duration_seconds", "id", "kind", "note",
                 "policy", "recorded_at", "recorded_by", "rrule", "start", "stated_announced", "timezone")


def _canonical_fields(row: Any, names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(row, name)
        out[name] = evidence_canonical.canonical_time(value) if isinstance(value, datetime) else value
    return out


async def log_maintenance_series(session: AsyncSession, row: MaintenanceSeries) -> int:
    """Append the series as it stands now (recorded, or cancelled) to the log, as log_maintenance
    does for a one-off announcement."""
    entry = evidence_canonical.canonical_json({"record": _canonical_fields(row, SERIES_FIELDS),
                                               "type": "maintenance_series"})
    # its own kind: the log's "maintenance" entries are one-off records by their id (collector.api.log)
    return await append_log(session, entry, "maintenance_series")


async def add_maintenance_series(session: AsyncSession, policy: str, kind: str, start: datetime, rrule: str,
                                 duration_seconds: int, timezone_name: str, note: str, *, recorded_by: str,
                                 stated_announced: datetime | None = None, author: str = "",
                                 now: datetime | None = None) -> MaintenanceSeries:
    """Record a series (validated by the caller, collector.rules.recurrence.parse_recurrence);
    `recorded_at` is this process's clock (`now` only for tests)."""
    row = MaintenanceSeries(policy=policy, kind=kind, start=start, rrule=rrule, duration_seconds=duration_seconds,
                            timezone=timezone_name, note=note, recorded_at=now or utcnow(), recorded_by=recorded_by,
                            author=author, stated_announced=stated_announced)
    session.add(row)
    await session.flush()
    await log_maintenance_series(session, row)
    return row


async def list_maintenance_series(session: AsyncSession, policy: str | None = None
                                  ) -> list[tuple[MaintenanceSeries, list[MaintenanceOccurrenceCancellation]]]:
    """Every series (cancelled ones too) with its cancelled occurrences, of one policy or all."""
    stmt = select(MaintenanceSeries).order_by(MaintenanceSeries.start, MaintenanceSeries.id)
    if policy is not None:
        stmt = stmt.where(MaintenanceSeries.policy == policy)
    rows = list((await session.scalars(stmt)).all())
    if not rows:
        return []
    cancellations: dict[int, list[MaintenanceOccurrenceCancellation]] = {r.id: [] for r in rows}
    ids = list(cancellations)
    for i in range(0, len(ids), IN_CHUNK):
        found = await session.scalars(select(MaintenanceOccurrenceCancellation)
                                      .where(MaintenanceOccurrenceCancellation.series_id.in_(ids[i:i + IN_CHUNK]))
                                      .order_by(MaintenanceOccurrenceCancellation.start))
        for c in found.all():
            cancellations[c.series_id].append(c)
    return [(r, cancellations[r.id]) for r in rows]


async def maintenance_series(session: AsyncSession, series_id: int
                             ) -> tuple[MaintenanceSeries | None, list[MaintenanceOccurrenceCancellation]]:
    """One series and its cancelled occurrences; (None, []) when there is none."""
    row = await session.get(MaintenanceSeries, series_id)
    if row is None:
        return None, []
    found = await session.scalars(select(MaintenanceOccurrenceCancellation)
                                  .where(MaintenanceOccurrenceCancellation.series_id == series_id)
                                  .order_by(MaintenanceOccurrenceCancellation.start))
    return row, list(found.all())


async def cancel_maintenance_series(session: AsyncSession, series_id: int, *, cancelled_by: str,
                                    reason: str) -> tuple[MaintenanceSeries | None, bool]:
    """Mark a series cancelled, as cancel_maintenance: (row, True), (row, False) when it already
    was, (None, False) when there is none; a conditional UPDATE, so the first cancellation stands."""
    done = await session.execute(
        update(MaintenanceSeries).where(MaintenanceSeries.id == series_id, MaintenanceSeries.cancelled_at.is_(None))
        .values(cancelled_at=utcnow(), cancelled_by=cancelled_by, cancel_reason=reason)
        .execution_options(synchronize_session=False))
    row = await session.get(MaintenanceSeries, series_id, populate_existing=True)
    if done.rowcount == 1 and row is not None:
        await log_maintenance_series(session, row)
    return row, done.rowcount == 1


async def cancel_occurrence(session: AsyncSession, series_id: int, start: datetime, *, cancelled_by: str,
                            reason: str) -> tuple[MaintenanceOccurrenceCancellation, bool]:
    """Cancel one occurrence (its start is checked by the caller): (row, True), or the standing
    cancellation and False when it was cancelled before. An INSERT that skips a conflict on
    (series_id, start), so two cancellations racing cannot both win."""
    now = utcnow()
    values = {"series_id": series_id, "start": start, "cancelled_at": now, "cancelled_by": cancelled_by,
              "cancel_reason": reason}
    table = MaintenanceOccurrenceCancellation.__table__
    if _dialect(session) == "postgresql":
        stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing(
            index_elements=["series_id", "start"])
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=["series_id", "start"])
    done = await session.execute(stmt)
    row = await session.scalar(select(MaintenanceOccurrenceCancellation).where(
        MaintenanceOccurrenceCancellation.series_id == series_id, MaintenanceOccurrenceCancellation.start == start)
        .execution_options(populate_existing=True))
    created = done.rowcount == 1
    if created:
        entry = evidence_canonical.canonical_json({
            "record": _canonical_fields(row, ("cancel_reason", "cancelled_at", "cancelled_by", "series_id", "start")),
            "type": "maintenance_occurrence_cancelled"})
        await append_log(session, entry, "maintenance_series")
    return row, created


async def agent_by_token_hash(session: AsyncSession, token_hash: str) -> Agent | None:
    return await session.scalar(select(Agent).where(Agent.token_sha256 == token_hash, Agent.revoked_at.is_(None)))


async def touch_agent(session: AsyncSession, agent_id: str, when: datetime, clock_offset: float | None = None) -> None:
    values: dict[str, Any] = {"last_seen": when}
    if clock_offset is not None:
        values["clock_offset_seconds"] = clock_offset
    await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def _insert_ignoring_duplicates(session: AsyncSession):
    # Core, on the table: the ORM's bulk path splices the RETURNING rows of every sub-batch
    # together row by row, which cost more than the insert itself. No conflict target: a row is
    # left out when it repeats a stored result id of its agent (a duplicate) or a stored vote of
    # its agent in its check and slot (a conflict); insert_results tells the two apart.
    table = Result.__table__
    if _dialect(session) == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# Bound parameters per IN list, well below SQLite's and asyncpg's limits of about 32 000.
IN_CHUNK = 1000


async def _stored_ids(session: AsyncSession, agent_id: str, ids: Sequence[str]) -> set[str]:
    """Which of `ids` the agent has stored (now, in this transaction, or by a committed racer)."""
    found: set[str] = set()
    for i in range(0, len(ids), IN_CHUNK):
        chunk = list(ids[i:i + IN_CHUNK])
        found.update((await session.scalars(
            select(Result.result_id).where(Result.agent_id == agent_id, Result.result_id.in_(chunk)))).all())
    return found


async def _standing_votes(session: AsyncSession, agent_id: str,
                          keys: Iterable[tuple[str, datetime]]) -> dict[tuple[str, datetime], tuple[str, bool]]:
    """The agent's stored vote (result id, ok) in each of the given (check, slot)."""
    by_check: dict[str, set[datetime]] = {}
    for check, slot in keys:
        by_check.setdefault(check, set()).add(slot)
    out: dict[tuple[str, datetime], tuple[str, bool]] = {}
    for check, slots in by_check.items():
        ordered = sorted(slots)
        for i in range(0, len(ordered), IN_CHUNK):
            rows = await session.execute(
                select(Result.slot, Result.result_id, Result.ok).where(
                    Result.agent_id == agent_id, Result.check == check, Result.slot.in_(ordered[i:i + IN_CHUNK])))
            out.update({(check, slot): (rid, bool(ok)) for slot, rid, ok in rows.all()})
    return out


def _conflict(index: int, row: dict[str, Any], agent_id: str, standing: str) -> dict[str, Any]:
    return {"index": index, "id": row["result_id"], "reason": "conflict",
            "error": f"results[{index}].slot: agent {agent_id!r} already voted in slot {row['slot'].isoformat()} "
                     f"of check {row['check']!r} ({standing}); the first vote stands and is never replaced"}


# Slots of one check further apart than this in one batch are marked as separate stretches, so
# that a batch holding both an old backlog and new results does not mark everything between.
MARK_GAP = timedelta(hours=1)


def slot_stretches(slots: Iterable[datetime], gap: timedelta = MARK_GAP) -> list[tuple[datetime, datetime]]:
    """Sorted [first, last] stretches of the given slots, split where two are more than `gap` apart."""
    out: list[tuple[datetime, datetime]] = []
    for slot in sorted(set(slots)):
        if out and slot - out[-1][1] <= gap:
            out[-1] = (out[-1][0], slot)
        else:
            out.append((slot, slot))
    return out


def marks_of(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[datetime, datetime]]]:
    """Per check, the stretches of slots that `rows` touched."""
    by_check: dict[str, set[datetime]] = {}
    for row in rows:
        by_check.setdefault(row["check"], set()).add(row["slot"])
    return {check: slot_stretches(slots) for check, slots in by_check.items()}


async def insert_results(session: AsyncSession, agent_id: str, rows: Sequence[dict[str, Any]], *,
                         replica: str = "import", batch_id: int | None = None) -> IngestOutcome:
    """Store a batch: one vote per agent, check and slot, and the first one stored stands.

    1. A result id seen before in the batch is a duplicate; a second result for a (check, slot)
       already taken earlier in the batch is held back. 2. One INSERT … ON CONFLICT DO NOTHING
       RETURNING for the rest: the ids it returns are stored now. 3. Every result not stored is a
       duplicate if its agent has its id stored (a replayed batch: acknowledged), else a
       conflict: the agent already voted in that slot under another id (refused).
    The unique constraints decide, not a read before the insert, so that two collectors racing
    on one database still keep exactly one vote and count duplicates exactly: PostgreSQL makes
    the second inserter wait for the first to commit, then leaves the row out. The batch's
    ingest marks are written in the same transaction, so other replicas learn of the new
    evidence exactly when it becomes visible."""
    if not rows:
        return IngestOutcome(0, 0)
    seen_ids: set[str] = set()
    claimed: dict[tuple[str, datetime], int] = {}  # (check, slot) -> index of the batch's first vote there
    insert_at: dict[str, int] = {}  # result id -> index, of the rows offered to the database
    held: dict[str, int] = {}  # result id -> index, of later votes in a slot the batch already votes in
    repeated = 0
    for i, row in enumerate(rows):
        rid = row["result_id"]
        if rid in seen_ids:
            repeated += 1
            continue
        seen_ids.add(rid)
        key = (row["check"], row["slot"])
        if key in claimed:
            held[rid] = i
        else:
            claimed[key] = i
            insert_at[rid] = i
    values = [dict(rows[i], agent_id=agent_id) for i in insert_at.values()]
    returned = (await session.execute(_insert_ignoring_duplicates(session).returning(Result.id, Result.result_id),
                                      values)).all()
    stored = {rid for _, rid in returned}
    if batch_id is not None and returned:
        # each result stored now points to the batch that brought it (docs/evidence.md)
        await session.execute(insert(BatchMember), [{"batch_id": batch_id, "position": insert_at[rid], "row_id": row_id}
                                                    for row_id, rid in returned])
    left_out = {rid: i for rid, i in insert_at.items() if rid not in stored}
    left_out.update(held)
    again = await _stored_ids(session, agent_id, list(left_out)) if left_out else set()
    refused = sorted(i for rid, i in left_out.items() if rid not in again)
    conflicts: list[dict[str, Any]] = []
    if refused:
        standing = await _standing_votes(session, agent_id, [(rows[i]["check"], rows[i]["slot"]) for i in refused])
        for i in refused:
            key = (rows[i]["check"], rows[i]["slot"])
            first = claimed[key]
            if first != i and rows[first]["result_id"] in stored:
                what = f"results[{first}] of this batch"
            elif key in standing:
                rid, ok = standing[key]
                what = f"stored result {rid!r}, {'ok' if ok else 'failed'}"
            else:
                what = "another result"
            conflicts.append(_conflict(i, rows[i], agent_id, what))
    if stored:
        now = rows[0].get("received_at") or utcnow()
        marks = [{"replica": replica, "check": check, "slot_from": lo, "slot_to": hi, "received_at": now}
                 for check, stretches in marks_of(rows).items() for lo, hi in stretches]
        await session.execute(insert(IngestMark), marks)
    return IngestOutcome(accepted=len(stored), duplicates=repeated + len(again), conflicts=tuple(conflicts))


async def load_observations(
    session: AsyncSession, checks: Sequence[str], start: datetime, end: datetime
) -> list[Observation]:
    """The evidence for [start, end): raw results, and the round summaries that replaced raw
    results past their retention. An agent's verdict in a slot is success if any attempt
    succeeded, so a summary row stands for its raw rows exactly (and overlap is harmless)."""
    out: list[Observation] = []
    for chunk in _chunks(sorted(set(checks))):
        stmt = (
            select(Result.agent_id, Result.check, Result.slot, Result.ok, Result.degraded)
            .where(Result.check.in_(chunk), Result.slot >= start, Result.slot < end)
        )
        out.extend(Observation(agent=a, check=c, ts=s, ok=bool(ok), degraded=bool(ok and slow))
                   for a, c, s, ok, slow in (await session.execute(stmt)).all())
        summaries = select(RoundSummary).where(RoundSummary.check.in_(chunk), RoundSummary.slot >= start,
                                               RoundSummary.slot < end)
        for row in (await session.scalars(summaries)).all():
            slow = set(row.degraded or ())
            out.extend(Observation(agent=a, check=row.check, ts=row.slot, ok=True, degraded=a in slow)
                       for a in row.succeeded)
            out.extend(Observation(agent=a, check=row.check, ts=row.slot, ok=False) for a in row.failed)
    return out


async def first_result_slot(session: AsyncSession, checks: Sequence[str]) -> datetime | None:
    checks = list(checks)
    raw = await session.scalar(select(func.min(Result.slot)).where(Result.check.in_(checks)))
    rolled = await session.scalar(select(func.min(RoundSummary.slot)).where(RoundSummary.check.in_(checks)))
    return min((t for t in (raw, rolled) if t is not None), default=None)


async def marks_since(session: AsyncSession, since: datetime, *, other_than: str) -> list[tuple[str, datetime, datetime]]:
    """(check, first slot, last slot) of what replicas other than `other_than` stored since `since`."""
    stmt = (select(IngestMark.check, IngestMark.slot_from, IngestMark.slot_to)
            .where(IngestMark.received_at >= since, IngestMark.replica != other_than))
    return [(c, lo, hi) for c, lo, hi in (await session.execute(stmt)).all()]


async def expire_marks(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(IngestMark).where(IngestMark.received_at < before))
    return result.rowcount


async def open_windows(session: AsyncSession) -> dict[str, datetime]:
    rows = await session.execute(select(OutageWindow.policy, OutageWindow.start).where(OutageWindow.end.is_(None)))
    return {policy: start for policy, start in rows.all()}


async def hold_lease(session: AsyncSession, name: str, holder: str, ttl: float, now: datetime) -> bool:
    """Claim or renew the lease `name` for `holder` (conditional UPDATE, then INSERT if it never
    existed). Whoever changes 0 rows knows another replica holds it."""
    expires = now + timedelta(seconds=ttl)
    renewed = await session.execute(
        update(Lease).where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=expires)
    )
    if renewed.rowcount == 1:
        return True
    if _dialect(session) == "postgresql":
        claim = postgresql.insert(Lease).on_conflict_do_nothing(index_elements=["name"])
    else:
        claim = sqlite.insert(Lease).on_conflict_do_nothing(index_elements=["name"])
    created = await session.execute(claim.values(name=name, holder=holder, expires_at=expires))
    return created.rowcount == 1


async def release_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


async def leases_named(session: AsyncSession, prefix: str) -> list[Lease]:
    """Every lease whose name starts with `prefix` (held or expired)."""
    stmt = select(Lease).where(Lease.name.startswith(prefix, autoescape=True)).order_by(Lease.name)
    return list((await session.scalars(stmt)).all())


async def renew_leases(session: AsyncSession, names: Sequence[str], holder: str, ttl: float, now: datetime) -> set[str]:
    """Renew those of `names` that `holder` still holds (one conditional UPDATE); the names
    returned are the ones renewed, any other was taken by another replica meanwhile."""
    if not names:
        return set()
    renewed = await session.execute(
        update(Lease).where(Lease.name.in_(list(names)), Lease.holder == holder)
        .values(expires_at=now + timedelta(seconds=ttl)).returning(Lease.name)
    )
    return set(renewed.scalars().all())


async def release_leases(session: AsyncSession, names: Sequence[str], holder: str) -> None:
    if names:
        await session.execute(delete(Lease).where(Lease.name.in_(list(names)), Lease.holder == holder))


async def drop_expired_leases(session: AsyncSession, prefix: str, before: datetime) -> int:
    result = await session.execute(
        delete(Lease).where(Lease.name.startswith(prefix, autoescape=True), Lease.expires_at < before))
    return result.rowcount


async def summarise_rounds(session: AsyncSession, check: str, rows: Sequence[Sequence[Any]]) -> None:
    """Merge raw rows (slot, agent, ok, degraded) of one check into its round summaries: an
    agent's verdict in a slot is success if any of its attempts succeeded, and a slot summarised
    before (rows over several calls) is merged, so summarising the same rows again changes
    nothing. Shared by the row-by-row expiry below and the partition drop (collector.partitions)."""
    verdicts: dict[datetime, dict[str, bool]] = {}
    slow: dict[datetime, set[str]] = {}  # agents whose success in the slot was degraded
    for slot, agent, ok, degraded in rows:
        group = verdicts.setdefault(slot, {})
        group[agent] = group.get(agent, False) or bool(ok)
        if ok and degraded:
            slow.setdefault(slot, set()).add(agent)
    existing = {}
    for chunk in _chunks(list(verdicts)):
        existing.update({r.slot: r for r in (await session.scalars(
            select(RoundSummary).where(RoundSummary.check == check, RoundSummary.slot.in_(chunk)))).all()})
    for slot, group in verdicts.items():
        row = existing.get(slot)
        if row is not None:
            for a in row.succeeded:
                group[a] = True
            for a in row.failed:
                group.setdefault(a, False)
            row.succeeded = sorted(a for a, ok in group.items() if ok)
            row.failed = sorted(a for a, ok in group.items() if not ok)
            row.degraded = sorted(set(row.degraded or ()) | slow.get(slot, set())) or None
        else:
            session.add(RoundSummary(check=check, slot=slot, succeeded=sorted(a for a, ok in group.items() if ok),
                                     failed=sorted(a for a, ok in group.items() if not ok),
                                     degraded=sorted(slow.get(slot, ())) or None))
    await session.flush()


async def roll_up_and_expire(session: AsyncSession, cutoff: datetime, max_rows: int = 200_000) -> int:
    """Summarise the raw results of slots before `cutoff` into round summaries, then delete them.

    Runs in the caller's transaction, so a slot is never deleted without its summary; works one
    check at a time and at most `max_rows` raw rows per call (call again while it returns > 0).
    Ingest refuses results older than its age limit, which is below the raw retention, so a
    summarised slot never receives a late result."""
    checks = (await session.scalars(select(Result.check).where(Result.slot < cutoff).distinct())).all()
    removed = 0
    for check in checks:
        rows = (await session.execute(
            select(Result.slot, Result.agent_id, Result.ok, Result.degraded).where(Result.check == check, Result.slot < cutoff)
            .order_by(Result.slot).limit(max_rows)
        )).all()
        boundary = cutoff
        if len(rows) == max_rows:
            boundary = rows[-1][0]  # that slot may continue past the limit: it waits for the next call
        await summarise_rounds(session, check, [r for r in rows if r[0] < boundary])
        result = await session.execute(delete(Result).where(Result.check == check, Result.slot < boundary))
        removed += result.rowcount
        if removed >= max_rows:
            break
    return removed


async def load_windows(
    session: AsyncSession,
    policy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    open_only: bool = False,
) -> list[OutageWindow]:
    stmt = select(OutageWindow)
    if policy is not None:
        stmt = stmt.where(OutageWindow.policy == policy)
    if since is not None:
        stmt = stmt.where((OutageWindow.end.is_(None)) | (OutageWindow.end > since))
    if until is not None:
        stmt = stmt.where(OutageWindow.start < until)
    if open_only:
        stmt = stmt.where(OutageWindow.end.is_(None))
    stmt = stmt.order_by(OutageWindow.start, OutageWindow.policy)
    return list((await session.scalars(stmt)).all())


async def replace_windows(
    session: AsyncSession, policy: str, from_: datetime, windows: Sequence[dict[str, Any]],
    until: datetime | None = None, loaded: Sequence[OutageWindow] | None = None,
) -> tuple[list[OutageWindow], list[OutageWindow]]:
    """Replace the policy's stored windows that start in [from_, until) (no `until`: from `from_`
    on) with `windows`.

    Returns (before, after) so that the caller can tell what changed (verified, resolved, moved).
    `loaded`: the policy's windows already read in this session (at least every one starting at
    or after `from_`), so that a pass over many policies reads them in one query."""
    if loaded is None:
        stmt = select(OutageWindow).where(OutageWindow.policy == policy, OutageWindow.start >= from_)
        if until is not None:
            stmt = stmt.where(OutageWindow.start < until)
        before = list((await session.scalars(stmt.order_by(OutageWindow.start))).all())
    else:
        before = sorted((w for w in loaded if w.start >= from_ and (until is None or w.start < until)),
                        key=lambda w: w.start)
    old = {(w.start, w.end, w.rule_hash): w for w in before}
    new_keys = {(w["start"], w["end"], w["rule_hash"]) for w in windows}
    after: list[OutageWindow] = []
    deleted = False
    for key, row in old.items():
        if key not in new_keys:
            await session.delete(row)
            deleted = True
    if deleted:
        await session.flush()  # before a new row takes the same (policy, start)
    now = utcnow()
    for w in windows:
        key = (w["start"], w["end"], w["rule_hash"])
        row = old.get(key)
        if row is not None:
            if row.evidence != w["evidence"]:
                row.evidence = w["evidence"]
                row.updated_at = now
            after.append(row)
        else:
            row = OutageWindow(policy=policy, start=w["start"], end=w["end"], rule_hash=w["rule_hash"],
                               evidence=w["evidence"], updated_at=now)
            session.add(row)
            after.append(row)
    return before, after


# --- runs of non-UP rounds and evaluation progress (the status page's rollup) ----------------


async def replace_runs(session: AsyncSession, policy: str, start: datetime, end: datetime,
                       runs: Sequence[Any], judged_until: datetime | None = None) -> None:
    """Make the policy's stored runs inside [start, end) exactly `runs` (judged again there).

    A stored run that crosses an edge of the range keeps its part outside it, so that every
    instant is covered by at most one run whichever ranges the evaluator judged. With
    `judged_until`, the policy's progress moves to it (never back)."""
    await replace_runs_many(session, [(policy, start, end, runs, judged_until)])


async def replace_runs_many(session: AsyncSession,
                            items: Sequence[tuple[str, datetime, datetime, Sequence[Any], datetime | None]]) -> None:
    """`replace_runs` for many policies at once (policy, start, end, runs, judged_until): the
    stored runs and progress rows they touch are read in one query each, the new runs written
    in one statement. An evaluation pass over thousands of policies costs a few round trips."""
    if not items:
        return
    names = sorted({item[0] for item in items})
    lo, hi = min(item[1] for item in items), max(item[2] for item in items)
    ranges = {item[0]: (item[1], item[2]) for item in items}
    touched = False
    for chunk in _chunks(names):
        stmt = select(RoundRun).where(RoundRun.policy.in_(chunk), RoundRun.start < hi, RoundRun.end > lo)
        for row in (await session.scalars(stmt)).all():
            start, end = ranges[row.policy]
            if not (row.start < end and row.end > start):
                continue
            touched = True
            if row.start < start and row.end > end:
                session.add(RoundRun(policy=row.policy, start=end, end=row.end, verdict=row.verdict))
                row.end = start
            elif row.start < start:
                row.end = start
            elif row.end > end:
                row.start = end
            else:
                await session.delete(row)
    if touched:
        await session.flush()
    new = [{"policy": policy, "start": max(r.start, start), "end": min(r.end, end), "verdict": r.verdict.value}
           for policy, start, end, runs, _ in items for r in runs if min(r.end, end) > max(r.start, start)]
    if new:
        await session.execute(insert(RoundRun), new)
    progress = {item[0]: item[4] for item in items if item[4] is not None}
    if progress:
        rows: dict[str, PolicyProgress] = {}
        for chunk in _chunks(sorted(progress)):
            for row in (await session.scalars(select(PolicyProgress).where(PolicyProgress.policy.in_(chunk)))).all():
                rows[row.policy] = row
        for policy, until in progress.items():
            row = rows.get(policy)
            if row is None:
                session.add(PolicyProgress(policy=policy, judged_until=until))
            elif until > row.judged_until:
                row.judged_until = until


def _chunks(values: Sequence[Any], size: int = 2000) -> list[Sequence[Any]]:
    """IN lists a bounded size: SQLite and asyncpg cap the parameters of one statement."""
    return [values[i:i + size] for i in range(0, len(values), size)]


async def first_result_slots(session: AsyncSession, checks: Sequence[str]) -> dict[str, datetime]:
    """Each check's earliest slot with evidence (raw results or round summaries), for many checks
    in one query per table."""
    out: dict[str, datetime] = {}
    for chunk in _chunks(sorted(set(checks))):
        for model in (Result, RoundSummary):
            stmt = select(model.check, func.min(model.slot)).where(model.check.in_(chunk)).group_by(model.check)
            for check, slot in (await session.execute(stmt)).all():
                if slot is not None and (check not in out or slot < out[check]):
                    out[check] = slot
    return out


async def windows_of(session: AsyncSession, policies: Sequence[str], since: datetime) -> dict[str, list[OutageWindow]]:
    """Each policy's windows still open or ending after `since`, for many policies at once."""
    out: dict[str, list[OutageWindow]] = {}
    for chunk in _chunks(sorted(set(policies))):
        stmt = select(OutageWindow).where(OutageWindow.policy.in_(chunk),
                                          OutageWindow.end.is_(None) | (OutageWindow.end > since))
        for row in (await session.scalars(stmt)).all():
            out.setdefault(row.policy, []).append(row)
    return out


async def runs_since(session: AsyncSession, policies: Sequence[str], since: datetime) -> dict[str, list[RoundRun]]:
    """Each policy's runs that end after `since`, oldest first."""
    stmt = (select(RoundRun).where(RoundRun.policy.in_(list(policies)), RoundRun.end > since)
            .order_by(RoundRun.policy, RoundRun.start))
    out: dict[str, list[RoundRun]] = {}
    for row in (await session.scalars(stmt)).all():
        out.setdefault(row.policy, []).append(row)
    return out


async def last_run_ends(session: AsyncSession, policies: Sequence[str]) -> dict[str, datetime]:
    """When each policy's latest non-UP run ended: an up service is up since then."""
    stmt = (select(RoundRun.policy, func.max(RoundRun.end)).where(RoundRun.policy.in_(list(policies)))
            .group_by(RoundRun.policy))
    return {p: end for p, end in (await session.execute(stmt)).all()}


async def judged_until(session: AsyncSession, policies: Sequence[str]) -> dict[str, datetime]:
    stmt = select(PolicyProgress.policy, PolicyProgress.judged_until).where(PolicyProgress.policy.in_(list(policies)))
    return {p: t for p, t in (await session.execute(stmt)).all()}


async def runs_between(session: AsyncSession, policies: Sequence[str], start: datetime,
                       end: datetime) -> dict[str, list[RoundRun]]:
    """Each policy's runs that overlap [start, end), oldest first, for many policies at once (a
    month report reads these instead of the month's results)."""
    out: dict[str, list[RoundRun]] = {}
    for chunk in _chunks(sorted(set(policies))):
        stmt = (select(RoundRun).where(RoundRun.policy.in_(chunk), RoundRun.start < end, RoundRun.end > start)
                .order_by(RoundRun.policy, RoundRun.start))
        for row in (await session.scalars(stmt)).all():
            out.setdefault(row.policy, []).append(row)
    return out


async def windows_between(session: AsyncSession, policies: Sequence[str], start: datetime,
                          end: datetime) -> dict[str, list[OutageWindow]]:
    """Each policy's windows that overlap [start, end) (open ones that started before `end`),
    oldest first, for many policies at once."""
    out: dict[str, list[OutageWindow]] = {}
    for chunk in _chunks(sorted(set(policies))):
        stmt = (select(OutageWindow).where(OutageWindow.policy.in_(chunk), OutageWindow.start < end,
                                           OutageWindow.end.is_(None) | (OutageWindow.end > start))
                .order_by(OutageWindow.policy, OutageWindow.start))
        for row in (await session.scalars(stmt)).all():
            out.setdefault(row.policy, []).append(row)
    return out


async def has_evidence(session: AsyncSession, checks: Sequence[str], start: datetime, end: datetime) -> bool:
    """Whether any of `checks` has a result (raw or summarised) in a slot of [start, end)."""
    checks = sorted(set(checks))
    for model in (Result, RoundSummary):
        stmt = select(model.slot).where(model.check.in_(checks), model.slot >= start, model.slot < end).limit(1)
        if (await session.execute(stmt)).first() is not None:
            return True
    return False


# -- signed evidence: agents' keys, batches, the append-only log (docs/evidence.md) ---------------

async def append_log(session: AsyncSession, entry: bytes, kind: str, now: datetime | None = None) -> int:
    """Append one entry to the log and return its index. The index is taken with an UPDATE of the
    one LogState row, whose row lock (PostgreSQL) or write lock (SQLite) lasts until the caller's
    transaction ends: collectors on one database append one after the other, the indices have no
    gaps, and an entry whose transaction rolls back gives its index back."""
    size = (await session.execute(update(LogState).where(LogState.id == 1).values(size=LogState.size + 1)
                                  .returning(LogState.size))).scalar_one()
    index = size - 1
    await session.execute(insert(LogEntry).values(index=index, leaf_hash=evidence_canonical.entry_leaf_hash(entry),
                                                  entry=entry, kind=kind, logged_at=now or utcnow()))
    return index


async def log_size(session: AsyncSession) -> int:
    return int((await session.scalar(select(LogState.size).where(LogState.id == 1))) or 0)


async def log_leaves(session: AsyncSession, start: int, end: int) -> list[bytes]:
    """The leaf hashes of entries [start, end), in order."""
    rows = await session.scalars(select(LogEntry.leaf_hash).where(LogEntry.index >= start, LogEntry.index < end)
                                 .order_by(LogEntry.index))
    return [bytes(h) for h in rows.all()]


async def log_entries(session: AsyncSession, indices: Iterable[int]) -> dict[int, bytes]:
    wanted = sorted(set(indices))
    out: dict[int, bytes] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        rows = await session.execute(select(LogEntry.index, LogEntry.entry).where(LogEntry.index.in_(wanted[i:i + IN_CHUNK])))
        out.update({index: bytes(entry) for index, entry in rows.all()})
    return out


class KeyConflict(ValueError):
    """A key that cannot be registered for the agent; the message says why."""


async def register_agent_key(session: AsyncSession, agent_id: str, public_key: str, *, registered_by: str,
                             now: datetime | None = None) -> tuple[AgentKey, bool]:
    """Register one of the agent's public keys ("ed25519:<base64>") and log it (`agent_key`):
    (key, True) when new, (key, False) when it was registered before (nothing logged again).
    Keys are never deleted: a new key is a rotation, and the batches older keys signed stay
    verifiable. The agent must exist. BadKey for a key text that is not one."""
    parsed = evidence_keys.parse_public_key(public_key, "public_key")
    text = evidence_keys.public_key_text(parsed)
    existing = await session.scalar(select(AgentKey).where(AgentKey.agent_id == agent_id, AgentKey.public_key == text))
    if existing is not None:
        return existing, False
    kid = evidence_keys.key_id(agent_id, parsed)
    clash = await session.scalar(select(AgentKey).where(AgentKey.agent_id == agent_id, AgentKey.key_id == kid))
    if clash is not None:
        raise KeyConflict(f"public_key: its key id {kid} is already that of agent {agent_id!r}'s key {clash.public_key}; "
                          "make another key")
    at = now or utcnow()
    index = await append_log(session, evidence_canonical.agent_key_entry(agent_id, text, at), "agent_key", at)
    row = AgentKey(agent_id=agent_id, key_id=kid, public_key=text, registered_at=at, registered_by=registered_by,
                   log_index=index)
    session.add(row)
    await session.flush()
    return row, True


async def sync_agent_keys(session: AsyncSession, entries: Iterable[tuple[str, str]]) -> int:
    """Register the config file's agent keys not registered yet; how many were new."""
    new = 0
    for agent_id, public_key in entries:
        if await session.get(Agent, agent_id) is None:
            continue
        _, added = await register_agent_key(session, agent_id, public_key, registered_by="config")
        new += added
    return new


async def agent_exists(session: AsyncSession, agent_id: str) -> bool:
    return await session.get(Agent, agent_id) is not None


async def agent_keys(session: AsyncSession, agent_id: str | None = None) -> list[AgentKey]:
    stmt = select(AgentKey).order_by(AgentKey.agent_id, AgentKey.log_index)
    if agent_id is not None:
        stmt = stmt.where(AgentKey.agent_id == agent_id)
    return list((await session.scalars(stmt)).all())


async def revoke_agent_key(session: AsyncSession, agent_id: str, key_id: str,
                           now: datetime | None = None) -> tuple[AgentKey | None, bool]:
    """Retire one of the agent's keys and log it (`agent_key_revoked`): batches logged after it may
    not be signed with it, those before stay verifiable. (row, True); (row, False) when it was
    revoked before; (None, False) when the agent has no such key. A conditional UPDATE, so two
    revocations racing log one entry."""
    at = now or utcnow()
    done = await session.execute(update(AgentKey).where(AgentKey.agent_id == agent_id, AgentKey.key_id == key_id,
                                                        AgentKey.revoked_at.is_(None))
                                 .values(revoked_at=at).execution_options(synchronize_session=False))
    row = await session.scalar(select(AgentKey).where(AgentKey.agent_id == agent_id, AgentKey.key_id == key_id)
                               .execution_options(populate_existing=True))
    if row is None or done.rowcount != 1:
        return row, False
    row.revoked_log_index = await append_log(
        session, evidence_canonical.agent_key_revocation_entry(agent_id, row.public_key, at), "agent_key_revoked", at)
    await session.flush()
    return row, True


async def agent_key(session: AsyncSession, agent_id: str, key_id: str) -> AgentKey | None:
    """The agent's registered, not revoked key of that key id."""
    return await session.scalar(select(AgentKey).where(AgentKey.agent_id == agent_id, AgentKey.key_id == key_id,
                                                       AgentKey.revoked_at.is_(None)))


async def add_batch(session: AsyncSession, agent_id: str, *, batch_sha256: str, prev: str | None,
                    key_id: str | None, signature: str | None, digests: Sequence[bytes], received_at: datetime) -> Batch:
    """Keep an accepted batch (not yet logged: log_batch, once its results are in)."""
    row = Batch(agent_id=agent_id, batch_sha256=batch_sha256, prev=prev, key_id=key_id, signature=signature,
                count=len(digests), digests="".join(d.hex() for d in digests), received_at=received_at)
    session.add(row)
    await session.flush()
    return row


async def log_batch(session: AsyncSession, batch: Batch) -> int:
    """Append the batch's entry to the log and note its index: last in the ingest transaction,
    so that the log's lock is held as briefly as can be."""
    entry = evidence_canonical.batch_entry(batch.agent_id, batch.batch_sha256, batch.key_id, batch.signature,
                                           batch.received_at)
    batch.log_index = await append_log(session, entry, "batch")
    await session.flush()
    return batch.log_index
