"""The append-only evidence log (docs/evidence.md, "The log"): its signed checkpoint, inclusion and
consistency proofs, and the verifier key that checks the checkpoints.

Entries are appended by the store in the transactions that accept a batch, register a key or
record a maintenance version; here they are only read. The tree's leaf hashes are read once and
kept (the log only grows), and so are the hashes of complete subtrees, which never change.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import store
from collector.config import CollectorConfig
from collector.errors import RequestError
from evidence import merkle
from evidence.checkpoint import Checkpoint, format_vkey, sign_checkpoint
from evidence.keys import BadKey, load_or_create_private_key

from .common import STATE, json_response, require_read

log = logging.getLogger("uptime.collector.log")

# Query parameters are log indices and sizes: below 2**63, what a BIGINT holds.
_MAX_PARAM = 2**63 - 1


@dataclass
class EvidenceLog:
    """The collector's log key and origin, and what it has read of the log's leaves."""

    origin: str
    key: Ed25519PrivateKey
    leaves: list[bytes] = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def vkey(self) -> str:
        return format_vkey(self.origin, self.key)

    async def tree(self, sessionmaker) -> int:
        """The log's current size, its leaves read up to it."""
        async with self.lock:
            async with sessionmaker() as session:
                size = await store.log_size(session)
                if size > len(self.leaves):
                    self.leaves.extend(await store.log_leaves(session, len(self.leaves), size))
            if len(self.leaves) < size:
                raise RuntimeError(f"the log's size is {size} but only {len(self.leaves)} entries are stored")
            return size

    def root(self, size: int) -> bytes:
        return merkle.subtree_hash(self.leaves, 0, size, self.cache) if size else merkle.EMPTY_ROOT

    def checkpoint(self, size: int, now: datetime) -> str:
        return sign_checkpoint(Checkpoint(self.origin, size, self.root(size), now), self.key)


EVIDENCE_LOG = web.AppKey("evidence_log", EvidenceLog)


def log_origin(config: CollectorConfig) -> str:
    """evidence.origin, else public_url's host and "/log" (a signed-note key name)."""
    if config.evidence.origin:
        return config.evidence.origin
    host = urlsplit(config.public_url).netloc if config.public_url else ""
    return f"{host}/log" if host and " " not in host and "+" not in host else "uptime-collector/log"


def log_key_path(config: CollectorConfig) -> Path:
    """evidence.log_key_file, else `log.key` beside a SQLite database file, else data/log.key."""
    if config.evidence.log_key_file:
        return Path(config.evidence.log_key_file)
    prefix = "sqlite+aiosqlite:///"
    if config.database_url.startswith(prefix):
        path = config.database_url[len(prefix):].partition("?")[0]
        if path and path != ":memory:" and not path.startswith("file:"):
            return Path(path).parent / "log.key"
    return Path("data") / "log.key"


def open_log(config: CollectorConfig) -> EvidenceLog:
    """The log key (made on first use, mode 0600) and origin; BadKey names the file when it cannot
    be used."""
    key, made = load_or_create_private_key(log_key_path(config))
    if made:
        log.info("made the log key %s", log_key_path(config))
    return EvidenceLog(log_origin(config), key)


async def _start_log(app: web.Application) -> None:
    """At start (after the migrations and the config's sync): the log key, and the agents' public
    keys the config gives, registered and logged when new."""
    state = app[STATE]
    try:
        app[EVIDENCE_LOG] = await asyncio.to_thread(open_log, state.config)
    except BadKey as err:
        raise SystemExit(f"evidence.log_key_file: {err}") from None
    entries = [(a.id, a.public_key) for a in state.config.agents if a.public_key]
    if entries:
        async with state.sessionmaker() as session:
            new = await store.sync_agent_keys(session, entries)
            await session.commit()
        if new:
            log.info("registered %d agent keys from the config", new)


def setup_log(app: web.Application) -> None:
    app.router.add_get("/api/v1/log/checkpoint", get_checkpoint)
    app.router.add_get("/api/v1/log/key", get_key)
    app.router.add_get("/api/v1/log/proof/inclusion", get_inclusion)
    app.router.add_get("/api/v1/log/proof/consistency", get_consistency)
    app.router.add_get("/api/v1/evidence/{policy}", get_evidence_bundle)
    # on_startup runs after the cleanup contexts' start (the application's migrations and config sync)
    app.on_startup.append(_start_log)


# One bundle is built at a time per collector: a month's evidence is read whole into memory.
_EXPORTING = asyncio.Lock()


async def get_evidence_bundle(request: web.Request) -> web.Response:
    """The evidence bundle of a policy's month (docs/evidence.md, "Bundles"), as `uptime-collector
    evidence export` writes it, for readers allowed to read reports; `uptime-verify` checks it."""
    from collector.rules.periods import month_bounds

    from .common import policy_named

    elog = _evidence_log(request)
    state = request.app[STATE]
    from .common import parse_ts

    policy = policy_named(request, request.match_info["policy"])
    q = request.query
    claim = "start" in q or "end" in q
    if claim:
        # a claimed outage checked against the evidence (Nexcess: Claimed vs Verified Outage)
        if "period" in q:
            raise RequestError("query parameters: give either 'period' or 'start' and 'end', not both")
        start_at, end = parse_ts(q.get("start"), "start"), parse_ts(q.get("end"), "end")
        if start_at is None or end is None:
            raise RequestError("query parameters 'start' and 'end' are both required for a claim (RFC 3339)")
        if end <= start_at:
            raise RequestError("query parameter 'end': must be after 'start'")
        period = f"claim-{start_at:%Y%m%dT%H%M}"
    else:
        period = q.get("period") or datetime.now(timezone.utc).strftime("%Y-%m")
        try:
            _, end = month_bounds(period, policy.timezone)
        except ValueError as err:
            raise RequestError(f"query parameter 'period': {err}") from None
    if _EXPORTING.locked():
        raise RequestError("another evidence bundle is being built: retry in a minute", 429, reason="busy")
    async with _EXPORTING:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        async with state.sessionmaker() as session:
            keeper = await load_keeper(session, EvidenceLog(elog.origin, elog.key))
        as_of = now if end > now else None  # not over yet: judged as of now, as the report does
        expected = state.expected_by_component(policy)
        try:
            if claim:
                bundle = await asyncio.to_thread(keeper.export_claim, policy, start_at, end, now=now, as_of=as_of,
                                                 expected_by_component=expected)
            else:
                bundle = await asyncio.to_thread(keeper.export_report, policy, period, now=now, as_of=as_of,
                                                 expected_by_component=expected)
        except ValueError as err:
            raise RequestError(f"query parameter '{'start' if claim else 'period'}': {err}", 422) from None
    filename = f"evidence-{policy.name}-{period}.json".replace('"', "")
    return json_response(bundle, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _evidence_log(request: web.Request) -> EvidenceLog:
    require_read(request)
    return request.app[EVIDENCE_LOG]


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is not None:
            return default
        raise RequestError(f"query parameter {name!r}: required (a whole number)", 400)
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > _MAX_PARAM:
        raise RequestError(f"query parameter {name!r}: {raw[:40]!r} is not a whole number from 0", 400)
    return int(raw)


def _b64(values) -> list[str]:
    return [base64.b64encode(v).decode("ascii") for v in values]


async def get_checkpoint(request: web.Request) -> web.Response:
    """The log's current tree head as a C2SP signed note (docs/evidence.md, "Checkpoints")."""
    elog = _evidence_log(request)
    size = await elog.tree(request.app[STATE].sessionmaker)
    note = elog.checkpoint(size, datetime.now(timezone.utc).replace(microsecond=0))
    return web.Response(text=note, content_type="text/plain", charset="utf-8")


async def get_key(request: web.Request) -> web.Response:
    """The verifier key of the checkpoints (golang.org/x/mod/sumdb/note vkey)."""
    elog = _evidence_log(request)
    return web.Response(text=elog.vkey + "\n", content_type="text/plain", charset="utf-8")


async def get_inclusion(request: web.Request) -> web.Response:
    """RFC 6962 §2.1.1 audit path of entry `index` in the tree of `size` (default: the current)."""
    elog = _evidence_log(request)
    current = await elog.tree(request.app[STATE].sessionmaker)
    index = _int_param(request, "index")
    size = _int_param(request, "size", current)
    if size > current:
        raise RequestError(f"query parameter 'size': {size} is beyond the log's size {current}", 400)
    if index >= size:
        raise RequestError(f"query parameter 'index': entry {index} is not in a tree of size {size}", 400)
    proof = merkle.inclusion_proof(index, size, elog.leaves, elog.cache)
    return json_response({"index": index, "tree_size": size, "leaf_hash": _b64([elog.leaves[index]])[0],
                          "hashes": _b64(proof)})


async def get_consistency(request: web.Request) -> web.Response:
    """RFC 6962 §2.1.2 consistency proof from tree size `first` to `second` (default: the current)."""
    elog = _evidence_log(request)
    current = await elog.tree(request.app[STATE].sessionmaker)
    first = _int_param(request, "first")
    second = _int_param(request, "second", current)
    if second > current:
        raise RequestError(f"query parameter 'second': {second} is beyond the log's size {current}", 400)
    if first > second:
        raise RequestError(f"query parameter 'first': {first} is larger than 'second' ({second})", 400)
    proof = merkle.consistency_proof(first, second, elog.leaves, elog.cache)
    return json_response({"first": first, "second": second, "hashes": _b64(proof)})


# -- evidence bundles from the database (what evidence.build.EvidenceKeeper keeps in memory) -------

async def load_keeper(session, elog: EvidenceLog):
    """An evidence.build.EvidenceKeeper holding what the database keeps: the log's entries, the
    agents' keys, the logged batches with their stored results, every maintenance version and
    every recurring series' versions and occurrence cancellations;
    its export_report then builds the bundle exactly as the reference does."""
    import json

    from sqlalchemy import select

    from collector.db import AgentKey, Batch, BatchMember, LogEntry, Result
    from evidence import canonical
    from evidence.build import EvidenceKeeper, MemoryLog, StoredBatch

    memory = MemoryLog(elog.origin, elog.key)
    size = await store.log_size(session)
    maintenance: dict[int, list] = {}
    series: dict[int, list] = {}
    occurrences: dict[int, list] = {}
    rows = await session.execute(select(LogEntry.index, LogEntry.entry, LogEntry.kind).where(LogEntry.index < size)
                                 .order_by(LogEntry.index))
    for index, entry, kind in rows.all():
        entry = bytes(entry)
        if memory.append(entry) != index:
            raise RuntimeError(f"the log's entry {index} is missing")
        if kind == "maintenance":
            record = json.loads(entry)["record"]
            maintenance.setdefault(record["id"], []).append((index, record))
        elif kind == "maintenance_series":   # a series' version, or one occurrence's cancellation
            logged = json.loads(entry)
            record = logged["record"]
            if logged["type"] == "maintenance_series":
                series.setdefault(record["id"], []).append((index, record))
            else:
                occurrences.setdefault(record["series_id"], []).append((index, record))
    keeper = EvidenceKeeper(memory)
    keeper.maintenance = maintenance
    keeper.series, keeper.occurrence_cancellations = series, occurrences
    for k in (await session.scalars(select(AgentKey).order_by(AgentKey.log_index))).all():
        item = {"key": k.public_key, "registered_at": canonical.canonical_time(k.registered_at), "log_index": k.log_index}
        if k.revoked_at is not None:
            item.update(revoked_at=canonical.canonical_time(k.revoked_at), revoked_log_index=k.revoked_log_index)
        keeper.keys.setdefault(k.agent_id, []).append(item)
    # each stored result's canonical object, by its batch and position, and by its digest (a
    # batch sent again holds results another batch stored)
    by_position: dict[tuple[int, int], dict] = {}
    by_digest: dict[tuple[str, bytes], dict] = {}
    linked = await session.execute(select(BatchMember.batch_id, BatchMember.position, Result)
                                   .join(Result, Result.id == BatchMember.row_id))
    for batch_id, position, r in linked.all():
        obj = canonical.result_object({c: getattr(r, c) for c in ("result_id", "check", "slot", "started", "ok",
                                                                  "latency_ms", "status_code", "error", "detail",
                                                                  "degraded", "extra")})
        by_position[(batch_id, position)] = obj
        by_digest[(r.agent_id, canonical.result_digest(obj))] = obj
    for b in (await session.scalars(select(Batch).where(Batch.log_index.is_not(None), Batch.log_index < size)
                                    .order_by(Batch.log_index))).all():
        digests = [bytes.fromhex(b.digests[i:i + 64]) for i in range(0, len(b.digests), 64)]
        results = []
        for position, digest in enumerate(digests):
            obj = by_position.get((b.id, position)) or by_digest.get((b.agent_id, digest))
            # a result no longer stored (raw results are rolled up after retention.raw) is shown
            # by its digest alone: this placeholder is never in a report's range
            results.append(obj if obj is not None else {"check": "", "slot": "", "id": ""})
        stored = StoredBatch(b.agent_id, b.prev, b.key_id, b.signature, b.received_at, b.log_index, results, digests)
        keeper.batches.append(stored)
        for obj in results:
            if obj["id"]:
                keeper.stored.setdefault((b.agent_id, obj["id"]), obj)
    return keeper
