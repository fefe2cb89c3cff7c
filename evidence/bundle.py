"""Evidence bundles: one JSON file that holds a report (or a claim check) and everything needed
to recompute it and to prove where each piece came from (docs/evidence.md, "The bundle").

`load_bundle` reads and checks the shape, naming the JSON path at fault; it checks no signature
and no proof (evidence.verify does). A file that is not JSON or not a bundle at all raises
UnreadableBundle; a bundle whose content is malformed raises BundleError. Batches are read by
hand rather than by a validation library: a month of one-result batches is 260,000 of them.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "UnreadableBundle", "BundleError", "Batch", "AgentKey", "MaintenanceVersion", "SeriesEvidence",
           "LogSection", "Bundle", "load_bundle", "parse_bundle", "save_bundle", "node_key"]

FORMAT = "uptime-verifier/evidence-bundle/v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")


class UnreadableBundle(Exception):
    """Not a bundle at all: unreadable, not JSON, or another format."""


class BundleError(ValueError):
    """A bundle whose content is malformed, with the JSON path: `batches[17].log_index: ...`."""


@dataclass(slots=True)
class Batch:
    position: int                    # index in the bundle's `batches`
    agent: str
    prev: str | None
    key_id: str | None
    signature: str | None
    received_at: str
    log_index: int
    results: list | None             # full result objects, or {"digest": hex} for results withheld
                                     # (items are checked where they are hashed, not here)
    count: int | None = None         # a batch withheld whole: how many results, and their hash
    results_sha256: str | None = None


@dataclass(slots=True)
class AgentKey:
    agent: str
    key: str                         # "ed25519:<base64>"
    registered_at: str
    log_index: int
    revoked_at: str | None = None
    revoked_log_index: int | None = None


@dataclass(slots=True)
class MaintenanceVersion:
    log_index: int
    record: dict


@dataclass(slots=True)
class SeriesEvidence:
    """A recurring maintenance series: every version of its record (recorded, then cancelled) and
    every logged cancellation of one of its occurrences, each with its log index."""
    position: int                    # index in the bundle's `series`
    versions: list[MaintenanceVersion]
    cancellations: list[MaintenanceVersion]


@dataclass(slots=True)
class LogSection:
    origin: str
    key: str                         # verifier key text "<name>+<key id>+<base64>"
    checkpoint: str                  # signed note
    consistency: dict[int, list[bytes]] = field(default_factory=dict)   # from tree size -> proof


@dataclass(slots=True)
class Bundle:
    kind: str                        # "report" or "claim"
    created_at: str
    policy_name: str
    policy_hash: str
    policy_rule: dict
    period: str | None
    claim_start: str | None
    claim_end: str | None
    inputs: dict
    report: dict
    log: LogSection
    agents: list[AgentKey]
    batches: list[Batch]
    maintenance: list[list[MaintenanceVersion]]
    tree_size: int
    nodes: dict[tuple[int, int], bytes]
    series: list[SeriesEvidence] = field(default_factory=list)   # absent from bundles before series


def node_key(start: int, end: int) -> str:
    return f"{start}:{end}"


def _fail(path: str, message: str) -> BundleError:
    return BundleError(f"{path}: {message}")


def _obj(value: Any, path: str) -> dict:
    if type(value) is not dict:
        raise _fail(path, f"expected an object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _get(obj: dict, name: str, path: str, *types: type, optional: bool = False) -> Any:
    if name not in obj:
        if optional:
            return None
        raise _fail(f"{path}.{name}", "missing")
    value = obj[name]
    if value is None and optional:
        return None
    if type(value) not in types:
        wanted = " or ".join(_kind(t()) if t is not type(None) else "null" for t in types)
        raise _fail(f"{path}.{name}", f"expected {wanted}, got {_kind(value)}")
    return value


def _index(obj: dict, name: str, path: str, optional: bool = False) -> int | None:
    value = _get(obj, name, path, int, optional=optional)
    if value is not None and value < 0:
        raise _fail(f"{path}.{name}", "a log index is not negative")
    return value


def _b64_hash(text: Any, path: str) -> bytes:
    if not isinstance(text, str):
        raise _fail(path, f"expected base64 text, got {_kind(text)}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(path, "not standard base64") from None
    if len(raw) != 32:
        raise _fail(path, f"a SHA-256 hash is 32 bytes, this is {len(raw)}")
    return raw


def _only(obj: dict, allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _fail(f"{path}.{key}", "unknown key")


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableBundle(f"{path}: cannot read: {exc.strerror or exc}") from None
    import gc
    paused = gc.isenabled()
    gc.disable()  # a month's bundle is millions of small objects: no collector passes over them
    try:
        return _load(raw, path)
    finally:
        if paused:
            gc.enable()


def _load(raw: bytes, path: Path) -> Bundle:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UnreadableBundle(f"{path}: not JSON{where}") from None
    except RecursionError:
        raise UnreadableBundle(f"{path}: nested too deeply to be a bundle") from None
    if type(data) is not dict or data.get("format") != FORMAT:
        found = data.get("format") if type(data) is dict else None
        raise UnreadableBundle(f"{path}: not an evidence bundle (expected \"format\": \"{FORMAT}\""
                               + (f", found {found!r})" if found is not None else ")"))
    return parse_bundle(data)


_TOP = ("format", "kind", "created_at", "policy", "period", "claim", "inputs", "report", "log", "agents",
        "batches", "maintenance", "series", "proof")
_BATCH = ("agent", "prev", "key_id", "signature", "received_at", "log_index", "results", "count", "results_sha256")


def parse_bundle(data: dict) -> Bundle:
    """A Bundle of decoded JSON; BundleError naming the path of the first fault."""
    _only(data, _TOP, "bundle")
    kind = _get(data, "kind", "bundle", str)
    if kind not in ("report", "claim"):
        raise _fail("bundle.kind", f"expected \"report\" or \"claim\", got {kind!r}")
    policy = _obj(_get(data, "policy", "bundle", dict), "policy")
    _only(policy, ("name", "hash", "rule"), "policy")
    period = claim_start = claim_end = None
    if kind == "report":
        period = _get(data, "period", "bundle", str)
    else:
        claim = _get(data, "claim", "bundle", dict)
        _only(claim, ("start", "end"), "claim")
        claim_start, claim_end = _get(claim, "start", "claim", str), _get(claim, "end", "claim", str)
    inputs = _get(data, "inputs", "bundle", dict)
    _only(inputs, ("as_of", "expected_by_component", "history", "fee"), "inputs")
    _get(inputs, "as_of", "inputs", str, optional=True)
    _get(inputs, "fee", "inputs", int, float, optional=True)
    expected = _get(inputs, "expected_by_component", "inputs", dict, optional=True) or {}
    for component, agents_of in expected.items():
        if type(agents_of) is not list or not all(type(a) is str for a in agents_of):
            raise _fail(f"inputs.expected_by_component.{component}", "expected a list of agent ids")
    for i, item in enumerate(_get(inputs, "history", "inputs", list, optional=True) or []):
        p = f"inputs.history[{i}]"
        _obj(item, p)
        _only(item, ("period", "availability_percent"), p)
        _get(item, "period", p, str)
        _get(item, "availability_percent", p, int, float, optional=True)

    log = _get(data, "log", "bundle", dict)
    _only(log, ("origin", "key", "checkpoint", "consistency"), "log")
    consistency: dict[int, list[bytes]] = {}
    for i, item in enumerate(_get(log, "consistency", "log", list, optional=True) or []):
        p = f"log.consistency[{i}]"
        _obj(item, p)
        _only(item, ("from_size", "hashes"), p)
        size = _index(item, "from_size", p)
        consistency[size] = [_b64_hash(h, f"{p}.hashes[{j}]") for j, h in enumerate(_get(item, "hashes", p, list))]
    log_section = LogSection(_get(log, "origin", "log", str), _get(log, "key", "log", str),
                             _get(log, "checkpoint", "log", str), consistency)

    agents: list[AgentKey] = []
    for i, item in enumerate(_get(data, "agents", "bundle", list)):
        p = f"agents[{i}]"
        _obj(item, p)
        _only(item, ("agent", "keys"), p)
        agent = _get(item, "agent", p, str)
        for j, key in enumerate(_get(item, "keys", p, list)):
            q = f"{p}.keys[{j}]"
            _obj(key, q)
            _only(key, ("key", "registered_at", "log_index", "revoked_at", "revoked_log_index"), q)
            revoked_at = _get(key, "revoked_at", q, str, optional=True)
            revoked_index = _index(key, "revoked_log_index", q, optional=True)
            if (revoked_at is None) != (revoked_index is None):
                raise _fail(q, "give both revoked_at and revoked_log_index, or neither")
            agents.append(AgentKey(agent, _get(key, "key", q, str), _get(key, "registered_at", q, str),
                                   _index(key, "log_index", q), revoked_at, revoked_index))

    batches = [_batch(item, i) for i, item in enumerate(_get(data, "batches", "bundle", list))]

    maintenance: list[list[MaintenanceVersion]] = []
    for i, item in enumerate(_get(data, "maintenance", "bundle", list)):
        p = f"maintenance[{i}]"
        _obj(item, p)
        _only(item, ("versions",), p)
        versions = []
        for j, version in enumerate(_get(item, "versions", p, list)):
            q = f"{p}.versions[{j}]"
            _obj(version, q)
            _only(version, ("log_index", "record"), q)
            versions.append(MaintenanceVersion(_index(version, "log_index", q), _get(version, "record", q, dict)))
        if not versions:
            raise _fail(f"{p}.versions", "empty")
        maintenance.append(versions)

    series: list[SeriesEvidence] = []
    for i, item in enumerate(_get(data, "series", "bundle", list, optional=True) or []):
        p = f"series[{i}]"
        _obj(item, p)
        _only(item, ("versions", "cancellations"), p)
        parts = {}
        for name in ("versions", "cancellations"):
            parts[name] = []
            for j, version in enumerate(_get(item, name, p, list)):
                q = f"{p}.{name}[{j}]"
                _obj(version, q)
                _only(version, ("log_index", "record"), q)
                parts[name].append(MaintenanceVersion(_index(version, "log_index", q), _get(version, "record", q, dict)))
        if not parts["versions"]:
            raise _fail(f"{p}.versions", "empty")
        series.append(SeriesEvidence(i, parts["versions"], parts["cancellations"]))

    proof = _get(data, "proof", "bundle", dict)
    _only(proof, ("tree_size", "nodes"), "proof")
    nodes: dict[tuple[int, int], bytes] = {}
    a2b = binascii.a2b_base64
    for key, value in _get(proof, "nodes", "proof", dict).items():
        start, _, end = key.partition(":")
        if not (start.isascii() and start.isdigit() and end.isascii() and end.isdigit()) or int(start) >= int(end):
            raise _fail(f"proof.nodes[{key!r}]", "expected a key \"<start>:<end>\" with start < end")
        try:
            raw = a2b(value, strict_mode=True) if type(value) is str else None
        except binascii.Error:
            raw = None
        if raw is None or len(raw) != 32:
            raw = _b64_hash(value, f"proof.nodes[{key!r}]")  # names the fault
        nodes[(int(start), int(end))] = raw
    return Bundle(
        kind=kind, created_at=_get(data, "created_at", "bundle", str), policy_name=_get(policy, "name", "policy", str),
        policy_hash=_get(policy, "hash", "policy", str), policy_rule=_get(policy, "rule", "policy", dict),
        period=period, claim_start=claim_start, claim_end=claim_end, inputs=inputs,
        report=_get(data, "report", "bundle", dict), log=log_section, agents=agents, batches=batches,
        maintenance=maintenance, tree_size=_index(proof, "tree_size", "proof"), nodes=nodes, series=series)


def _batch(item: Any, i: int) -> Batch:
    """A batch; the usual shape is checked inline, anything else by _batch_in_detail."""
    if type(item) is dict and len(item) == 7:
        try:
            agent, prev, key_id, signature = item["agent"], item["prev"], item["key_id"], item["signature"]
            received_at, log_index, results = item["received_at"], item["log_index"], item["results"]
        except KeyError:
            return _batch_in_detail(item, i)
        if (type(agent) is str and type(received_at) is str and type(log_index) is int and log_index >= 0
                and type(results) is list and (prev is None or (type(prev) is str and _HEX64.match(prev)))
                and ((key_id is None and signature is None)
                     or (type(key_id) is str and type(signature) is str and _HEX8.match(key_id)))):
            # each result's own shape is checked where it is hashed (evidence.verify)
            return Batch(i, agent, prev, key_id, signature, received_at, log_index, results)
    return _batch_in_detail(item, i)


def _batch_in_detail(item: Any, i: int) -> Batch:
    p = f"batches[{i}]"
    if type(item) is not dict:
        raise _fail(p, f"expected an object, got {_kind(item)}")
    for key in item:
        if key not in _BATCH:
            raise _fail(f"{p}.{key}", "unknown key")
    agent = _get(item, "agent", p, str)
    prev = _get(item, "prev", p, str, optional=True)
    if prev is not None and not _HEX64.match(prev):
        raise _fail(f"{p}.prev", "expected 64 lowercase hex digits or null")
    key_id = _get(item, "key_id", p, str, optional=True)
    if key_id is not None and not _HEX8.match(key_id):
        raise _fail(f"{p}.key_id", "expected 8 lowercase hex digits or null")
    signature = _get(item, "signature", p, str, optional=True)
    if (key_id is None) != (signature is None):
        raise _fail(p, "give both key_id and signature, or neither (an unsigned batch)")
    results = item.get("results")
    count = results_hash = None
    if results is None:
        count = _get(item, "count", p, int)
        results_hash = _get(item, "results_sha256", p, str)
        if count < 0 or not _HEX64.match(results_hash):
            raise _fail(p, "a batch withheld whole gives its count and its results_sha256 (64 hex digits)")
    else:
        if type(results) is not list:
            raise _fail(f"{p}.results", f"expected a list, got {_kind(results)}")
        if "count" in item or "results_sha256" in item:
            raise _fail(p, "give results, or count and results_sha256 for a batch withheld whole; not both")
        for j, result in enumerate(results):
            if type(result) is not dict:
                raise _fail(f"{p}.results[{j}]", f"expected an object, got {_kind(result)}")
    return Batch(i, agent, prev, key_id, signature, _get(item, "received_at", p, str), _index(item, "log_index", p),
                 results, count, results_hash)


def bundle_json(bundle: Bundle) -> dict:
    """The JSON value of a Bundle (load_bundle's inverse)."""
    out: dict[str, Any] = {"format": FORMAT, "kind": bundle.kind, "created_at": bundle.created_at,
                           "policy": {"name": bundle.policy_name, "hash": bundle.policy_hash, "rule": bundle.policy_rule}}
    if bundle.kind == "report":
        out["period"] = bundle.period
    else:
        out["claim"] = {"start": bundle.claim_start, "end": bundle.claim_end}
    agents: dict[str, list] = {}
    for k in bundle.agents:
        entry = {"key": k.key, "registered_at": k.registered_at, "log_index": k.log_index}
        if k.revoked_at is not None:
            entry.update(revoked_at=k.revoked_at, revoked_log_index=k.revoked_log_index)
        agents.setdefault(k.agent, []).append(entry)
    batches = []
    for b in bundle.batches:
        entry = {"agent": b.agent, "prev": b.prev, "key_id": b.key_id, "signature": b.signature,
                 "received_at": b.received_at, "log_index": b.log_index}
        if b.results is not None:
            entry["results"] = b.results
        else:
            entry.update(count=b.count, results_sha256=b.results_sha256)
        batches.append(entry)
    out.update(
        inputs=bundle.inputs, report=bundle.report,
        log={"origin": bundle.log.origin, "key": bundle.log.key, "checkpoint": bundle.log.checkpoint,
             "consistency": [{"from_size": size, "hashes": [base64.b64encode(h).decode("ascii") for h in hashes]}
                             for size, hashes in sorted(bundle.log.consistency.items())]},
        agents=[{"agent": agent, "keys": ks} for agent, ks in agents.items()],
        batches=batches,
        maintenance=[{"versions": [{"log_index": v.log_index, "record": v.record} for v in versions]}
                     for versions in bundle.maintenance],
        series=[{"versions": [{"log_index": v.log_index, "record": v.record} for v in s.versions],
                 "cancellations": [{"log_index": c.log_index, "record": c.record} for c in s.cancellations]}
                for s in bundle.series],
        proof={"tree_size": bundle.tree_size,
               "nodes": {node_key(*k): base64.b64encode(v).decode("ascii") for k, v in sorted(bundle.nodes.items())}},
    )
    return out


def save_bundle(bundle: Bundle | dict, path: str | Path) -> None:
    """Write the bundle whole or not at all (a temporary file renamed into place)."""
    data = bundle_json(bundle) if isinstance(bundle, Bundle) else bundle
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
