"""What an agent signs and what the collector logs, as bytes anyone can recompute
(docs/evidence.md, "What is signed" and "Log entries").

Every structure is JSON canonicalized by RFC 8785 (JCS): keys sorted, no whitespace, numbers as
ECMAScript prints them, strings UTF-8 with only the mandatory escapes. `canonical_json` is a fast
encoder for the plain values used here (dicts, lists, strings, ints, floats, booleans, null),
tested equal to the `rfc8785` package byte for byte; it falls back to that package for the rare
float ECMAScript prints with an exponent.

A result (the nine fields of the wire protocol, docs/wire-protocol.md, as the collector stores
them): {"check", "detail", "error", "id", "latency_ms", "ok", "slot", "started", "status_code"},
every field present, null where the wire had none; timestamps in UTC as
YYYY-MM-DDTHH:MM:SS[.f]Z with the fraction in microseconds, trailing zeros dropped (none when
zero). Its digest is SHA-256 of its canonical bytes.

A batch statement, what the agent signs with Ed25519:
  {"agent": <id>, "count": <results>, "prev": <hex hash of the agent's previous acknowledged
   statement, or null>, "results_sha256": <hex SHA-256 of the results' 32-byte digests
   concatenated in the batch's order>, "type": "uptime-verifier/batch/v1"}
The statement names digests, not results, so an evidence bundle can prove one customer's results
without showing the others an agent probed in the same batch; `prev` chains each agent's
statements, so a bundle that leaves one out is caught, and one signature vouches for every
statement before it (a month of one-result batches costs a few signature checks, not 260,000).
The batch hash is SHA-256 of the statement's bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring as _json_string
from typing import Any, Iterable, Mapping, Sequence

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import keys as _keys
from .merkle import leaf_hash

__all__ = [
    "BATCH_TYPE", "RESULT_FIELDS", "CanonicalError", "canonical_json", "canonical_time",
    "result_object", "result_object_from_wire", "canonical_result", "result_digest", "results_sha256",
    "batch_statement", "statement_for_results", "batch_hash", "SignedBatch", "sign_batch",
    "verify_batch_signature", "SIGNATURE_HEADER", "format_signature_header", "parse_signature_header",
    "batch_entry", "maintenance_record", "maintenance_entry", "agent_key_entry", "agent_key_revocation_entry",
    "entry_leaf_hash", "MAINTENANCE_FIELDS",
]

BATCH_TYPE = "uptime-verifier/batch/v1"
RESULT_FIELDS = ("check", "detail", "error", "id", "latency_ms", "ok", "slot", "started", "status_code")
# Present only when set (so that a result without them hashes as a plain one): `degraded` when
# true, and each of the wire's optional details (protocol.wire.DETAIL_FIELDS) when not null.
# Timestamps among them take the canonical form; a journey's steps have all six fields of a step.
try:
    from protocol.wire import DETAIL_FIELDS as _WIRE_DETAILS
except ImportError:  # a protocol without details
    _WIRE_DETAILS = ()
OPTIONAL_FIELDS = ("degraded", *_WIRE_DETAILS)
_TIME_DETAILS = frozenset({"cert_not_after", "scheduled"})
_STEP_FIELDS = ("detail", "error", "latency_ms", "name", "ok", "status_code")
_ALL_FIELDS = frozenset(RESULT_FIELDS) | frozenset(OPTIONAL_FIELDS)
MAINTENANCE_FIELDS = ("author", "cancel_reason", "cancelled_at", "cancelled_by", "end", "id", "kind", "note",
                      "policy", "recorded_at", "recorded_by", "start", "stated_announced")
UTC = timezone.utc
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")
_INT_LIMIT = 2 ** 53 - 1  # RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles


class CanonicalError(ValueError):
    """A value that has no canonical form here; the message names the field."""


# -- RFC 8785 -------------------------------------------------------------------------------------

def _number(value: int | float) -> str:
    if type(value) is int:
        if -_INT_LIMIT <= value <= _INT_LIMIT:
            return str(value)
        raise CanonicalError(f"integer {value} is beyond what a JSON number holds exactly")
    if math.isnan(value) or math.isinf(value):
        raise CanonicalError(f"{value} is not a JSON number")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) <= _INT_LIMIT:
        return str(int(value))
    text = repr(value)
    if "e" not in text and not text.endswith(".0"):  # Python's shortest round-trip digits, in the range where ECMAScript prints them alike
        return text
    return rfc8785.dumps(value).decode("ascii")


def _latency(value: int | float) -> str:
    """_number for a result's latency: the usual short float as Python prints it."""
    if type(value) is float:
        text = repr(value)
        # digits and one point, not ending in ".0", below 1e16: as ECMAScript prints it
        if "e" not in text and "n" not in text and not text.endswith(".0") and value > 0:
            return text
    return _number(value)


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is int or kind is float:
        return _number(value)
    if kind is dict:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise CanonicalError(f"object key {key!r} is not a string")
        if all(key.isascii() for key in keys):
            keys.sort()
        else:  # RFC 8785 §3.2.3: by UTF-16 code units
            keys.sort(key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(_json_string(k) + ":" + _encode(value[k]) for k in keys) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(int(value) if isinstance(value, int) else float(value))
    if isinstance(value, str):
        return _json_string(str.__str__(value))
    raise CanonicalError(f"{type(value).__name__} has no JSON form")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value."""
    try:
        return _encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("a string holds a lone surrogate, which UTF-8 cannot encode") from None


# -- results ---------------------------------------------------------------------------------------

def canonical_time(moment: datetime) -> str:
    """UTC, YYYY-MM-DDTHH:MM:SS[.f]Z, the fraction in microseconds without trailing zeros."""
    if not isinstance(moment, datetime):
        raise CanonicalError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CanonicalError("naive datetime: refusing to guess its time zone")
    m = moment.astimezone(UTC)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    if m.microsecond:
        text += "." + f"{m.microsecond:06d}".rstrip("0")
    return text + "Z"


def _time_field(value: Any, field: str) -> str:
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, str):
        from protocol.timestamps import parse_rfc3339
        try:
            return canonical_time(parse_rfc3339(value))
        except ValueError:
            raise CanonicalError(f"field '{field}': {value!r} is not an RFC 3339 timestamp") from None
    raise CanonicalError(f"field '{field}': expected a timestamp, got {type(value).__name__}")


def result_object(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical result object of a stored or validated result.

    `fields` has the wire names (`id`, or the store's `result_id`), timestamps as aware datetimes
    (or RFC 3339 text), everything else as stored. What the collector stores is exactly what it
    validated (protocol.wire.ResultIn), so the object it rebuilds equals the one the agent made.
    """
    rid = fields["id"] if "id" in fields else fields.get("result_id")
    latency = fields.get("latency_ms")
    if isinstance(latency, bool) or (latency is not None and not isinstance(latency, (int, float))):
        raise CanonicalError(f"field 'latency_ms': expected a number or null, got {type(latency).__name__}")
    if latency is not None and latency == 0:
        latency = 0  # -0.0 has no sign in JSON
    status = fields.get("status_code")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise CanonicalError(f"field 'status_code': expected an integer or null, got {type(status).__name__}")
    ok = fields.get("ok")
    if ok is not True and ok is not False:
        raise CanonicalError(f"field 'ok': expected true or false, got {ok!r}")
    out = {
        "check": fields.get("check"), "detail": fields.get("detail"), "error": fields.get("error"), "id": rid,
        "latency_ms": latency, "ok": ok, "slot": _time_field(fields.get("slot"), "slot"),
        "started": _time_field(fields.get("started"), "started"), "status_code": status,
    }
    for name in ("check", "id"):
        if not isinstance(out[name], str):
            raise CanonicalError(f"field '{name}': expected a string, got {type(out[name]).__name__}")
    for name in ("detail", "error"):
        if out[name] is not None and not isinstance(out[name], str):
            raise CanonicalError(f"field '{name}': expected a string or null, got {type(out[name]).__name__}")
    degraded = fields.get("degraded")
    if degraded is not None and degraded is not True and degraded is not False:
        raise CanonicalError(f"field 'degraded': expected true, false or null, got {degraded!r}")
    if degraded:
        out["degraded"] = True
    # the store keeps the details in one JSON column (`extra`); a validated result has them apart
    details = fields.get("extra") or {}
    for name in _WIRE_DETAILS:
        value = fields.get(name, details.get(name))
        if value is None:
            continue
        if name in _TIME_DETAILS:
            value = _time_field(value, name)
        elif name == "steps":
            value = [_step(step, f"steps[{i}]") for i, step in enumerate(value)]
        elif name == "phases":
            value = {k: (0 if v == 0 else v) for k, v in dict(value).items()}
        out[name] = value
    return out


def _step(step: Any, where: str) -> dict[str, Any]:
    if hasattr(step, "model_dump"):
        step = step.model_dump()
    if not isinstance(step, Mapping):
        raise CanonicalError(f"field '{where}': expected an object")
    out = {name: step.get(name) for name in _STEP_FIELDS}
    if out["latency_ms"] is not None and out["latency_ms"] == 0:
        out["latency_ms"] = 0
    return out


def result_object_from_wire(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical object of a result as an agent sends it: validated by the collector's own
    model (protocol.wire.ResultIn: whitespace stripped, timestamps to UTC), so that agent and
    collector hash the same values."""
    from protocol.wire import ResultIn
    return result_object(ResultIn.model_validate(raw).model_dump())


def canonical_result(obj: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a canonical result object: RESULT_FIELDS, and any of OPTIONAL_FIELDS."""
    try:
        check, detail, error, rid = obj["check"], obj["detail"], obj["error"], obj["id"]
        latency, ok, slot, started, status = obj["latency_ms"], obj["ok"], obj["slot"], obj["started"], obj["status_code"]
    except KeyError:
        check = None
    if check is None or len(obj) != len(RESULT_FIELDS):
        missing = [f for f in RESULT_FIELDS if f not in obj]
        extra = sorted(set(obj) - _ALL_FIELDS)
        if missing or extra:
            raise CanonicalError("a result has the fields " + ", ".join(RESULT_FIELDS) + " and optionally "
                                 + ", ".join(OPTIONAL_FIELDS)
                                 + (f"; missing {', '.join(missing)}" if missing else "")
                                 + (f"; unknown {', '.join(extra)}" if extra else ""))
        return canonical_json(dict(obj))  # a result with details: the general encoder
    if not (type(check) is str and type(rid) is str and type(slot) is str and type(started) is str
            and (ok is True or ok is False) and (detail is None or type(detail) is str)
            and (error is None or type(error) is str) and (status is None or type(status) is int)
            and (latency is None or type(latency) is float or type(latency) is int)):
        return canonical_json(dict(obj))  # the general encoder: whatever the types, the bytes RFC 8785 gives
    # the usual shape, keys in RFC 8785 order, written directly (a month of results is 260,000 of these)
    text = _RESULT_FORMAT % (
        _json_string(check), "null" if detail is None else _json_string(detail),
        "null" if error is None else _json_string(error), _json_string(rid),
        "null" if latency is None else _latency(latency), "true" if ok else "false",
        _json_string(slot), _json_string(started),
        "null" if status is None else str(status) if -1000 < status < 1000 else _number(status))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("a string holds a lone surrogate, which UTF-8 cannot encode") from None


_RESULT_FORMAT = ('{"check":%s,"detail":%s,"error":%s,"id":%s,"latency_ms":%s,"ok":%s,"slot":%s,"started":%s,'
                  '"status_code":%s}')


def result_digest(obj: Mapping[str, Any]) -> bytes:
    """SHA-256 of the result's canonical bytes (32 bytes)."""
    return hashlib.sha256(canonical_result(obj)).digest()


def results_sha256(digests: Iterable[bytes]) -> str:
    """Hex SHA-256 of the 32-byte result digests concatenated in order."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


# -- batch statements and signatures ------------------------------------------------------------

def batch_statement(agent: str, prev: str | None, count: int, results_hash: str) -> bytes:
    """The bytes an agent signs for one batch."""
    if not isinstance(agent, str) or not agent:
        raise CanonicalError("field 'agent': expected the agent's id")
    if prev is not None and not (isinstance(prev, str) and _HEX64.match(prev)):
        raise CanonicalError("field 'prev': expected 64 lowercase hex digits or null")
    if not isinstance(results_hash, str) or not _HEX64.match(results_hash):
        raise CanonicalError("field 'results_sha256': expected 64 lowercase hex digits")
    if type(count) is not int or count < 0:
        raise CanonicalError("field 'count': expected a whole number of results")
    return _statement(agent, prev, count, results_hash)


def _statement(agent: str, prev: str | None, count: int, results_hash: str) -> bytes:
    """batch_statement without the checks: `prev` and `results_hash` are hex, `count` an int."""
    text = ('{"agent":' + _json_string(agent) + ',"count":' + str(count)
            + ',"prev":' + ("null" if prev is None else '"' + prev + '"')
            + ',"results_sha256":"' + results_hash + '","type":"' + BATCH_TYPE + '"}')
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("field 'agent': holds a lone surrogate, which UTF-8 cannot encode") from None


def statement_for_results(agent: str, prev: str | None, results: Sequence[Mapping[str, Any]]) -> bytes:
    """The statement of a batch of canonical result objects."""
    return batch_statement(agent, prev, len(results), results_sha256(result_digest(r) for r in results))


def batch_hash(statement: bytes) -> str:
    """Hex SHA-256 of a batch statement: what `prev` and the log entry name."""
    return hashlib.sha256(statement).hexdigest()


@dataclass(frozen=True)
class SignedBatch:
    statement: bytes
    batch_hash: str
    key_id: str
    signature: str  # standard base64 of the 64-byte Ed25519 signature

    def header(self) -> str:
        prev = _statement_prev(self.statement)
        return format_signature_header(self.key_id, prev, self.signature)


def _statement_prev(statement: bytes) -> str | None:
    import json
    return json.loads(statement)["prev"]


def sign_batch(key: Ed25519PrivateKey, agent: str, prev: str | None,
               results: Sequence[Mapping[str, Any]]) -> SignedBatch:
    """Sign a batch of canonical result objects as agent `agent` whose last acknowledged
    statement hashed to `prev` (None for its first)."""
    statement = statement_for_results(agent, prev, results)
    signature = base64.b64encode(_keys.sign(key, statement)).decode("ascii")
    return SignedBatch(statement, batch_hash(statement), _keys.key_id(agent, key), signature)


def decode_signature(text: Any, what: str = "signature") -> bytes:
    if not isinstance(text, str):
        raise CanonicalError(f"{what}: expected base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CanonicalError(f"{what}: not standard base64") from None
    if len(raw) != 64:
        raise CanonicalError(f"{what}: an Ed25519 signature is 64 bytes, this one is {len(raw)}")
    return raw


def verify_batch_signature(key: Ed25519PublicKey, statement: bytes, signature: str) -> bool:
    return _keys.verify(key, statement, decode_signature(signature))


# The HTTP header an agent sends its batch's signature in (the body stays the wire protocol's).
SIGNATURE_HEADER = "Uptime-Batch-Signature"
_HEADER = re.compile(r"^key=([0-9a-f]{8}), prev=([0-9a-f]{64}|none), sig=([A-Za-z0-9+/]{86}==)$")


def format_signature_header(key_id: str, prev: str | None, signature: str) -> str:
    """`key=<8 hex>, prev=<64 hex or none>, sig=<base64>`."""
    return f"key={key_id}, prev={prev or 'none'}, sig={signature}"


def parse_signature_header(text: str) -> tuple[str, str | None, str]:
    """(key id, prev or None, base64 signature) of an Uptime-Batch-Signature header."""
    m = _HEADER.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise CanonicalError(f"header {SIGNATURE_HEADER}: expected 'key=<8 hex digits>, prev=<64 hex digits or "
                             "none>, sig=<base64 of 64 bytes>'")
    key, prev, sig = m.groups()
    decode_signature(sig, f"header {SIGNATURE_HEADER}: sig")
    return key, (None if prev == "none" else prev), sig


# -- log entries ----------------------------------------------------------------------------------

def batch_entry(agent: str, batch_sha256: str, key_id: str | None, signature: str | None,
                received_at: datetime | str) -> bytes:
    """The log entry of an accepted batch: its hash, agent, signature (null for an unsigned batch)
    and the collector's time of receipt."""
    if key_id is not None and not (isinstance(key_id, str) and _HEX8.match(key_id)):
        raise CanonicalError("field 'key_id': expected 8 lowercase hex digits or null")
    if (key_id is None) != (signature is None):
        raise CanonicalError("fields 'key_id' and 'signature': give both or neither")
    if not isinstance(batch_sha256, str) or not _HEX64.match(batch_sha256):
        raise CanonicalError("field 'batch_sha256': expected 64 lowercase hex digits")
    if not isinstance(agent, str) or (signature is not None and not isinstance(signature, str)):
        raise CanonicalError("fields 'agent' and 'signature': expected strings")
    return _batch_entry(agent, batch_sha256, key_id, signature, _time_field(received_at, "received_at"))


def _batch_entry(agent: str, batch_sha256: str, key_id: str | None, signature: str | None, received_at: str) -> bytes:
    """batch_entry of checked fields, `received_at` as the canonical text."""
    text = ('{"agent":' + _json_string(agent) + ',"batch_sha256":"' + batch_sha256
            + '","key_id":' + ("null" if key_id is None else '"' + key_id + '"')
            + ',"received_at":' + _json_string(received_at)
            + ',"signature":' + ("null" if signature is None else _json_string(signature)) + ',"type":"batch"}')
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("field 'agent': holds a lone surrogate, which UTF-8 cannot encode") from None


def maintenance_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical object of a maintenance record as stored (collector.db.Maintenance): every
    field of MAINTENANCE_FIELDS, timestamps canonical, null where none."""
    out: dict[str, Any] = {}
    for name in MAINTENANCE_FIELDS:
        value = fields.get(name)
        if name in ("start", "end", "recorded_at"):
            value = _time_field(value, name)
        elif name in ("stated_announced", "cancelled_at"):
            value = None if value is None else _time_field(value, name)
        elif name == "id":
            if type(value) is not int:
                raise CanonicalError("field 'id': expected the record's integer id")
        elif name in ("note", "author"):
            value = value or ""
            if not isinstance(value, str):
                raise CanonicalError(f"field '{name}': expected a string")
        elif value is not None and not isinstance(value, str):
            raise CanonicalError(f"field '{name}': expected a string or null")
        out[name] = value
    for name in ("policy", "kind", "recorded_by"):
        if not out[name]:
            raise CanonicalError(f"field '{name}': missing")
    return out


def maintenance_entry(record: Mapping[str, Any]) -> bytes:
    """The log entry of a maintenance record's state: appended when it is recorded and again, whole,
    when it is cancelled."""
    return canonical_json({"record": maintenance_record(record), "type": "maintenance"})


def agent_key_entry(agent: str, public_key: str, registered_at: datetime | str) -> bytes:
    """The log entry of an agent's public key ("ed25519:<base64>"), appended when the collector
    registers it: batches logged after it may be signed with it."""
    _keys.parse_public_key(public_key, f"agent {agent}: key")
    return canonical_json({"agent": agent, "key": public_key,
                           "registered_at": _time_field(registered_at, "registered_at"), "type": "agent_key"})


def agent_key_revocation_entry(agent: str, public_key: str, revoked_at: datetime | str) -> bytes:
    """The log entry that retires an agent's key: batches logged after it may not be signed with it
    (those before stay verifiable)."""
    _keys.parse_public_key(public_key, f"agent {agent}: key")
    return canonical_json({"agent": agent, "key": public_key, "revoked_at": _time_field(revoked_at, "revoked_at"),
                           "type": "agent_key_revoked"})


def entry_leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash of a log entry's canonical bytes."""
    return leaf_hash(entry)
