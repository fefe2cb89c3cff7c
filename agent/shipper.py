"""Ships spooled results to the collector (POST /api/v1/results) and sends heartbeats.

Errors come in two kinds, decided in `Shipper.ship_batch` alone (wire-protocol.md, Responses):
- transient (connection error, timeout, 401/403, 429, 5xx, and a 4xx that refuses the batch's
  signature rather than its results): keep the batch, back off, retry;
- final (400/413/422, "do not retry it as is"): the results the refusal names (`rejected`) go to
  the spool's `rejected` table, loudly and counted, and the rest of the batch is shipped again; a
  refused batch of several that names none (a 413, say) is retried in halves, down to the
  culprits alone, so that one bad result never takes good ones with it.
Nothing leaves the spool except what the collector acknowledged with 200.

Every batch is signed (docs/evidence.md, "What an agent signs"): `BatchSigner` holds the agent's
Ed25519 key and the hash of the last statement the collector acknowledged, which the next
statement names as `prev`, so the agent's batches form a chain.
"""
from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import random
import re
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from agent.collector_client import CollectorClient, Reply
from agent.metrics import AgentMetrics
from agent.spool import Spool, Spooled
from evidence.canonical import SIGNATURE_HEADER, CanonicalError, SignedBatch, result_object_from_wire, sign_batch
from evidence.keys import BadKey, key_id, load_or_create_private_key, public_key_text
from protocol.durations import format_duration
from protocol.timestamps import parse_rfc3339, rfc3339, utcnow

log = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 0.05  # first retry almost at once: most failures are a blip or a collector restart
BACKOFF_MAX_SECONDS = 30.0  # cap: a recovered collector is noticed within 30 s; an outage costs a few requests a minute
BACKOFF_MULTIPLIER = 2.0  # doubling reaches the cap after ~10 failures, about a minute of retrying
LOG_EVERY_N_FAILURES = 10  # repeat a still-failing warning only this often, so a long outage doesn't flood the log
# After the collector refused a signature, batches go unsigned this long before signing is tried
# again: a key registered meanwhile is used within 5 minutes, at one refused request per 5 minutes.
UNSIGNED_SECONDS = 300.0
REJECT_STATUSES = frozenset({400, 413, 422})  # wire-protocol.md: refused whole, do not retry as is
AUTH_STATUSES = frozenset({401, 403})  # wire-protocol.md: keep the results, back off, log loudly


def _culprits(reply: Reply, batch: list[Spooled]) -> dict[int, str] | None:
    """The results a refusal names (wire-protocol.md: `rejected`, by index and id), as spool seq
    -> the collector's reason; None when the refusal names none or names them inconsistently."""
    listed = reply.body.get("rejected") if isinstance(reply.body, dict) else None
    if not isinstance(listed, list) or not listed:
        return None
    found: dict[int, str] = {}
    for item in listed:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(batch):
            return None
        if "id" in item and item["id"] != batch[index].result.get("id"):
            return None
        found[batch[index].seq] = str(item.get("error") or reply.error_message())
    return found


def backoff_delay(attempt: int) -> float:
    """Full jitter: uniform in [0, min(max, initial * multiplier**attempt)] (attempt 0 = first retry)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * BACKOFF_MULTIPLIER ** min(attempt, 64))
    return random.uniform(0, ceiling)


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
CHAIN_FORMAT = "uptime-agent/chain/v1"


def load_agent_key(path: str | os.PathLike):
    """(key, whether it was made now) of the key file at `path`, made there if there is none;
    BadKey naming the file when it cannot be read, written or used."""
    try:
        return load_or_create_private_key(path)
    except OSError as exc:  # e.g. the folder is not writable
        raise BadKey(f"{path}: cannot write the key file: {exc.strerror or exc}") from None


class BatchSigner:
    """The agent's side of signing, kept on disk (evidence.build.AgentSigner is the in-memory
    reference): its key, and `prev`, the hash of its last statement the collector acknowledged.

    The chain state file is JSON, {"format", "agent", "key_id", "prev"}, replaced atomically on
    every acknowledgement. A state written under another key (or agent id) is not this key's
    chain: the first statement then has prev null, as with a new key file.
    """

    def __init__(self, agent: str, key, chain_path: str | os.PathLike, prev: str | None = None):
        self.agent, self.key = agent, key
        self.key_id = key_id(agent, key)
        self.public_key = public_key_text(key)
        self.chain_path = Path(chain_path)
        self.prev = prev

    @classmethod
    def open(cls, agent: str, key_path: str | os.PathLike, chain_path: str | os.PathLike) -> BatchSigner:
        """Load (or make) the key and read the chain state; BadKey naming the file at fault."""
        key, made = load_agent_key(key_path)
        signer = cls(agent, key, chain_path)
        if made:
            log.info("agent %s: made a new signing key in %s (key id %s); register its public key with "
                        "the collector: %s", agent, key_path, signer.key_id, signer.public_key)
        signer.prev = signer._read_prev()
        return signer

    def _read_prev(self) -> str | None:
        path = self.chain_path
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BadKey(f"{path}: cannot read the chain state: {exc.strerror or exc}") from None
        try:
            state = json.loads(text)
        except ValueError:
            state = None
        prev = state.get("prev") if isinstance(state, dict) else None
        if (not isinstance(state, dict) or state.get("format") != CHAIN_FORMAT
                or not (prev is None or (isinstance(prev, str) and _HEX64.match(prev)))):
            # written whole or not at all, so this is not a torn write but someone's edit: refuse
            # rather than guess which batch the next one follows
            raise BadKey(f"{path}: not a chain state file (expected JSON with format {CHAIN_FORMAT!r} and "
                         "prev: 64 hex digits or null); remove it to start a new chain")
        if state.get("agent") != self.agent or state.get("key_id") != self.key_id:
            log.info("agent %s: %s holds the chain of another key (%s of %s); starting a new chain",
                     self.agent, path, state.get("key_id"), state.get("agent"))
            return None
        return prev

    def sign(self, results: list[dict[str, Any]]) -> SignedBatch | None:
        """The signed statement of `results` (wire dicts, as posted), or None when one of them has
        no canonical form: the collector, which validates with the same model, refuses it, and
        the shipper's refusal handling narrows the batch down to it."""
        try:
            objects = [result_object_from_wire(result) for result in results]
        except (ValueError, CanonicalError) as exc:  # pydantic's ValidationError is a ValueError
            log.warning("agent %s: a batch of %d results cannot be signed (%s); sent unsigned",
                        self.agent, len(results), _reason(exc))
            return None
        return sign_batch(self.key, self.agent, self.prev, objects)

    async def acknowledged(self, signed: SignedBatch) -> None:
        """After the collector's 200: the next statement names this one, also after a restart."""
        self.prev = signed.batch_hash
        state = {"format": CHAIN_FORMAT, "agent": self.agent, "key_id": self.key_id, "prev": self.prev}
        try:
            await asyncio.to_thread(_write_atomically, self.chain_path, json.dumps(state) + "\n")
        except OSError as exc:
            # Shipping goes on: after a restart the next statement names an older `prev`, which
            # the chain tolerates as it tolerates a resend after a lost acknowledgement.
            log.error("agent %s: cannot save the chain state to %s: %s", self.agent, self.chain_path,
                      exc.strerror or exc)


def signer_for(config) -> BatchSigner:
    """The signer of a resolved AgentConfig: its key file (made at first start) and chain state;
    a ConfigError naming agent.key_file and the file at fault when either cannot be used."""
    from protocol.checks import ConfigError

    try:
        return BatchSigner.open(config.agent_id, config.key_path(), config.chain_path())
    except BadKey as exc:
        raise ConfigError([("agent.key_file", str(exc))]) from None


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: the first field at fault
        first = errors()[0]
        return f"field '{'.'.join(map(str, first['loc']))}': {first['msg']}"
    return str(exc)


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same folder, flushed to disk, renamed over `path`: a reader (or a
    restart after a crash) sees the old state or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Outcome(enum.Enum):
    SENT = "sent"
    REJECTED = "rejected"
    SPLIT = "split"  # a batch of several refused without naming its culprits: retry it in halves
    RETRY = "retry"


class Shipper:
    def __init__(
        self,
        client: CollectorClient,
        spool: Spool,
        metrics: AgentMetrics,
        *,
        batch_size: int,
        flush_interval: float,
        signer: BatchSigner | None = None,
        unsigned_seconds: float = UNSIGNED_SECONDS,
    ):
        self._client = client
        self._signer = signer  # None: batches go unsigned (as before agents had keys)
        self._unsigned_seconds = unsigned_seconds
        self._unsigned_until: float | None = None  # time.monotonic() until which batches go unsigned
        self._spool = spool
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._attempt = 0  # consecutive transient failures
        self._last_failure: str | None = None
        self.retry_after: float = 0.0  # a 429's Retry-After, honoured by the next backoff

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"shipper-{self._client.agent_id}")

    def notify(self) -> None:
        """A result was spooled: ship now if a full batch waits, else at the next flush."""
        if self._spool.count >= self._batch_size:
            self._wake.set()

    async def stop(self, flush_timeout: float) -> None:
        """Stop the loop, then try once, within `flush_timeout`, to ship what is left (no backoff)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if flush_timeout > 0:
            try:
                async with asyncio.timeout(flush_timeout):
                    await self.drain(retry=False)
            except TimeoutError:
                pass
        if self._spool.count:
            log.info("%d results stay in the spool, shipped at the next start", self._spool.count)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: say so, and keep shipping
                log.exception("shipper failed; retrying")
                await asyncio.sleep(backoff_delay(self._attempt))

    # --- shipping ------------------------------------------------------------------------------

    async def drain(self, *, retry: bool = True) -> bool:
        """Ship batches in spool order until the spool is empty; True if it is.

        1. read the oldest batch; 2. POST it; 3. on SENT or REJECTED go on, on SPLIT retry with
        half the batch, on RETRY back off (or, with retry=False, give up and return False)."""
        limit = self._batch_size
        while True:
            batch = await self._spool.peek(limit)
            if not batch:
                return True
            outcome = await self.ship_batch(batch)
            if outcome is Outcome.SPLIT:
                limit = max(1, len(batch) // 2)
            elif outcome is Outcome.RETRY:
                if not retry:
                    return False
                delay = max(backoff_delay(self._attempt), min(self.retry_after, BACKOFF_MAX_SECONDS))
                self._attempt += 1
                self.retry_after = 0.0
                await asyncio.sleep(delay)

    async def ship_batch(self, batch: list[Spooled], *, sign: bool = True) -> Outcome:
        """POST one batch and act on the answer; the one place where errors are classified."""
        results = [item.result for item in batch]
        body = self._client.results_body(results)
        signed = None
        if sign and self._signer is not None and not self._sending_unsigned():
            # signed from the very bytes posted, parsed back: the collector hashes what it reads
            signed = self._signer.sign(json.loads(body)["results"])
        try:
            reply = await self._client.post_results(
                results, body=body, signature=signed.header() if signed is not None else None)
        except TimeoutError:
            return self._transient("timeout", f"no answer from {self._client.base_url} in time")
        except (aiohttp.ClientError, OSError) as exc:
            return self._transient("connect", f"cannot reach {self._client.base_url}: {exc}")

        seqs = [item.seq for item in batch]
        status = reply.status
        if status == 200:
            if signed is not None:
                # `prev` first, then the spool: a crash between the two resends the batch as a
                # new statement that names this one, its results duplicates to the collector.
                # A collector that finds the chain broken (it holds no statement `prev` names)
                # will say so in a refusal of its own; handling that is left to the collector for
                # now, so such an answer is treated by its status like any other.
                await self._signer.acknowledged(signed)
            await self._spool.ack(seqs)
            self._metrics.shipped.inc(len(batch))
            self._recovered()
            self._check_ack(reply, len(batch))
            return Outcome.SENT
        about_signature = reply.error_message().startswith(f"header {SIGNATURE_HEADER}")
        if status in REJECT_STATUSES and about_signature and signed is not None:
            # The collector refused the signature, not the results: most often this agent's key is
            # not registered there yet. Setting the results aside would lose good evidence; the
            # batch goes again unsigned, which a collector that does not require signatures takes
            # (an unsigned batch proves less, but no less than that collector already accepts
            # from anyone holding the token) and one that does refuses with 401, keeping them.
            self._metrics.ship_failures.labels(reason="signature").inc()
            self._unsigned_until = time.monotonic() + self._unsigned_seconds
            log.error(
                "collector refused the batch's signature (%d): %s; shipping unsigned for the next %s; register "
                "this agent's public key %s with the collector (`uptime-agent key show` prints it)",
                status, reply.error_message(), format_duration(self._unsigned_seconds), self._signer.public_key,
            )
            return await self.ship_batch(batch, sign=False)
        if status in AUTH_STATUSES and about_signature:
            # it requires signed batches: unsigned ones will not do, so sign again at the next try
            self._unsigned_until = None
            return self._transient(
                "signature",
                f"collector requires signed batches ({status}): {reply.error_message()}; results are kept; "
                + (f"register this agent's public key {self._signer.public_key} with the collector "
                   "(`uptime-agent key show` prints it)" if self._signer is not None else "this agent has no key"),
                level=logging.ERROR,
            )
        if status in REJECT_STATUSES:
            self._metrics.ship_failures.labels(reason="rejected").inc()
            culprits = _culprits(reply, batch)
            if culprits is None and len(batch) > 1:
                # too large, or refused without saying which results: halves, down to the culprits
                # alone, so that no good result is set aside with a bad one
                log.warning("collector refused a batch of %d results (%d: %s), retrying in halves",
                            len(batch), status, reply.error_message())
                return Outcome.SPLIT
            refused = culprits if culprits is not None else {batch[0].seq: reply.error_message()}
            moved = await self._spool.reject(list(refused), status, reply.error_message(), errors=refused)
            self._metrics.rejected.inc(moved)
            first = next(iter(refused.values()))
            log.error(
                "collector REFUSED %d of %d results with %d (first: %s) -- they will not be retried; kept "
                "in the rejected table of %s; the others are shipped again",
                moved, len(batch), status, first, self._spool.path,
            )
            self._recovered()
            return Outcome.REJECTED
        if status in AUTH_STATUSES:
            what = "unknown token" if status == 401 else "token belongs to another agent"
            return self._transient(
                "unauthorized",
                f"collector refused the token ({status}, {what}): {reply.error_message()}; "
                f"results are kept, check collector.token / UPTIME_AGENT_TOKEN",
                level=logging.ERROR,
            )
        if status == 429:
            self.retry_after = _retry_after(reply)
            return self._transient("rate_limited", "collector is rate limiting (429)")
        if 500 <= status <= 599:
            return self._transient("server_error", f"collector answered {status}: {reply.error_message()}")
        return self._transient(
            "unexpected", f"collector answered unexpected {status}: {reply.error_message()}", level=logging.ERROR
        )

    def _sending_unsigned(self) -> bool:
        if self._unsigned_until is None:
            return False
        if time.monotonic() < self._unsigned_until:
            return True
        self._unsigned_until = None
        log.info("signing batches again (the collector refused the signature %s ago)",
                 format_duration(self._unsigned_seconds))
        return False

    def _transient(self, reason: str, message: str, *, level: int = logging.WARNING) -> Outcome:
        self._metrics.ship_failures.labels(reason=reason).inc()
        if reason != self._last_failure or self._attempt % LOG_EVERY_N_FAILURES == 0:
            log.log(
                level,
                "shipping failed (%s, %d in a row): %s; %d results kept in the spool",
                reason, self._attempt + 1, message, self._spool.count,
            )
        self._last_failure = reason
        return Outcome.RETRY

    def _recovered(self) -> None:
        if self._attempt:
            log.info("shipping works again after %d failed attempts", self._attempt)
        self._attempt = 0
        self._last_failure = None

    @staticmethod
    def _check_ack(reply: Reply, sent: int) -> None:
        body = reply.body if isinstance(reply.body, dict) else {}
        try:
            acknowledged = int(body["accepted"]) + int(body.get("duplicates", 0))
        except (KeyError, TypeError, ValueError):
            return  # 200 is the acknowledgement; the counts are informative only
        if acknowledged != sent:
            log.warning("collector acknowledged %s of %d results sent (%s)", acknowledged, sent, body)


def _retry_after(reply: Reply) -> float:
    value = reply.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


class Heartbeat:
    """POST /api/v1/heartbeat every `interval`; estimates the clock offset from each answer.

    offset = server_time - (t_send + rtt / 2): the server read its clock, on average, half a
    round trip after we sent. Positive means the collector's clock is ahead of ours.
    """

    def __init__(self, client: CollectorClient, spool: Spool, metrics: AgentMetrics, *, interval: float):
        self._client = client
        self._spool = spool
        self._metrics = metrics
        self._interval = interval
        self._task: asyncio.Task | None = None
        self.offset: float | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self._client.agent_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat failed unexpectedly")
            await asyncio.sleep(self._interval)

    async def beat(self) -> float | None:
        """Send one heartbeat; return the new offset estimate, or None if there is none."""
        sent = utcnow()
        t_send = time.time()
        t0 = time.monotonic()
        body = {
            "agent": self._client.agent_id,
            "sent": rfc3339(sent),
            # Before the first estimate: null, "not measured", which is not the same as "in sync".
            "clock_offset_seconds": round(self.offset, 6) if self.offset is not None else None,
            "spool_results": self._spool.count,
        }
        try:
            reply = await self._client.post_heartbeat(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._failed(f"cannot reach {self._client.base_url}: {exc or type(exc).__name__}")
            return None
        rtt = time.monotonic() - t0
        if reply.status != 200:
            level = logging.ERROR if reply.status in AUTH_STATUSES else logging.WARNING
            self._failed(f"collector answered {reply.status}: {reply.error_message()}", level)
            return None
        server_time = _server_time(reply)
        if server_time is None:
            self._failed("answer has no usable server_time or Date header")
            return None
        if self._failing:
            log.info("heartbeats reach the collector again")
        self._failing = False
        self.offset = server_time - (t_send + rtt / 2)
        self._metrics.clock_offset.set(self.offset)
        return self.offset

    def _failed(self, message: str, level: int = logging.WARNING) -> None:
        if not self._failing:
            log.log(level, "heartbeat failed: %s", message)
        self._failing = True


def _server_time(reply: Reply) -> float | None:
    """The collector's clock as unix time: `server_time` in the body, else the Date header."""
    if isinstance(reply.body, dict) and isinstance(reply.body.get("server_time"), str):
        try:
            return parse_rfc3339(reply.body["server_time"]).timestamp()
        except ValueError:
            pass
    if "date" in reply.headers:
        try:
            return parsedate_to_datetime(reply.headers["date"]).timestamp()
        except (TypeError, ValueError):
            pass
    return None
