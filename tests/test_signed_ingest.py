"""Signed batches at ingest (docs/evidence.md, "On the wire"): agents' public keys from the config,
the CLI and the admin API, each registration logged; a batch's signature verified over the results
as the collector validated them before anything is stored; the batch kept with its results linked
to it and its log entry, in the results' own transaction. Against the real collector app on SQLite
and PostgreSQL, signing as an agent does (evidence.build.AgentSigner)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from collector import store
from collector.app import create_app
from collector.cli import main
from collector.config import parse_config
from collector.db import AgentKey, Batch, BatchMember, LogEntry, Result
from collector.service import CollectorState
from evidence import canonical
from evidence.build import AgentSigner
from evidence.keys import generate_private_key, key_id, public_key_text
from protocol.timestamps import rfc3339

TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
KEY_A1 = generate_private_key()


def make_state(database_url: str, *, require: bool = False, a2_require: bool | None = None,
               policy: bool = False) -> CollectorState:
    agents = [{"id": "a1", "token": TOKENS["a1"], "public_key": public_key_text(KEY_A1)},
              {"id": "a2", "token": TOKENS["a2"]}]
    if a2_require is not None:
        agents[1]["require_signatures"] = a2_require
    return CollectorState.create(parse_config({
        "database_url": database_url, "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "evidence": {"require_signatures": require},
        "agents": agents,
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
        "policies": [{"name": "gold", "preset": "nexcess", "components": ["web"]}] if policy else [],
    }, "test"))


@pytest.fixture
async def api(database_url, aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the log key of a PostgreSQL collector goes to data/log.key here
    state = make_state(database_url, require=True, a2_require=False)
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


def result(minutes_ago: int, ok: bool = True, **extra) -> dict:
    slot = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return {"id": uuid.uuid4().hex, "check": "web", "slot": rfc3339(slot),
            "started": rfc3339(slot + timedelta(milliseconds=13)), "ok": ok,
            "latency_ms": 12.5 if ok else None, "status_code": 200 if ok else None,
            "error": None if ok else "timeout", "detail": None if ok else "  no answer  ", **extra}


def signed_header(signer: AgentSigner, results: list[dict]) -> tuple[str, canonical.SignedBatch]:
    signed = signer.sign([canonical.result_object_from_wire(r) for r in results])
    return signed.header(), signed


async def post(client, agent: str, results: list[dict], header: str | None = None):
    headers = {"Authorization": f"Bearer {TOKENS[agent]}"}
    if header is not None:
        headers[canonical.SIGNATURE_HEADER] = header
    return await client.post("/api/v1/results", json={"agent": agent, "results": results}, headers=headers)


async def count(state, model) -> int:
    async with state.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_a_signed_batch_is_verified_kept_linked_and_logged_and_chains(api) -> None:
    signer = AgentSigner("a1", KEY_A1)
    first = [result(5), result(4, ok=False)]
    header, signed = signed_header(signer, first)
    resp = await post(api, "a1", first, header)
    assert resp.status == 200, await resp.text()
    signer.acknowledged(signed)
    second = [result(3)]
    header2, signed2 = signed_header(signer, second)
    resp = await post(api, "a1", second, header2)
    assert resp.status == 200, await resp.text()
    async with api.state.sessionmaker() as session:
        batches = (await session.scalars(select(Batch).order_by(Batch.log_index))).all()
        entries = {e.index: e for e in (await session.scalars(select(LogEntry))).all()}
        links = (await session.execute(select(Result.result_id, BatchMember.batch_id, BatchMember.position)
                                       .join(BatchMember, BatchMember.row_id == Result.id)
                                       .order_by(BatchMember.batch_id, BatchMember.position))).all()
    assert [(b.batch_sha256, b.prev, b.key_id, b.count) for b in batches] == [
        (signed.batch_hash, None, key_id("a1", KEY_A1), 2), (signed2.batch_hash, signed.batch_hash, key_id("a1", KEY_A1), 1)]
    assert [tuple(r) for r in links] == [(first[0]["id"], batches[0].id, 0), (first[1]["id"], batches[0].id, 1),
                                         (second[0]["id"], batches[1].id, 0)]
    # the log: a1's key from the config (entry 0), then each batch's entry, as the offline core makes it
    assert entries[0].kind == "agent_key"
    assert json.loads(entries[0].entry)["key"] == public_key_text(KEY_A1)
    for b, s in zip(batches, (signed, signed2)):
        entry = bytes(entries[b.log_index].entry)
        assert entry == canonical.batch_entry("a1", s.batch_hash, s.key_id, s.signature, b.received_at)
        assert bytes(entries[b.log_index].leaf_hash) == canonical.entry_leaf_hash(entry)
        assert b.digests == "".join(canonical.result_digest(canonical.result_object_from_wire(r)).hex()
                                    for r in (first if s is signed else second))


async def test_a_replayed_signed_batch_is_acknowledged_again_and_logged_again(api) -> None:
    signer = AgentSigner("a1", KEY_A1)
    batch = [result(5)]
    header, _ = signed_header(signer, batch)
    assert (await post(api, "a1", batch, header)).status == 200
    again = await post(api, "a1", batch, header)
    assert again.status == 200
    assert await again.json() == {"accepted": 0, "duplicates": 1}
    assert await count(api.state, Batch) == 2
    assert await count(api.state, BatchMember) == 1  # the result was stored once, by the first


async def test_unsigned_batch_of_an_agent_that_must_sign_is_401_naming_the_header(api) -> None:
    resp = await post(api, "a1", [result(5)])
    assert resp.status == 401
    assert "Uptime-Batch-Signature: missing" in (await resp.json())["error"]
    assert await count(api.state, Result) == 0
    # a2 is exempt (its own require_signatures: false): kept unsigned, logged with null key and signature
    assert (await post(api, "a2", [result(5)])).status == 200
    async with api.state.sessionmaker() as session:
        b = await session.scalar(select(Batch))
        entry = json.loads(await session.scalar(select(LogEntry.entry).where(LogEntry.index == b.log_index)))
    assert (b.key_id, b.signature, b.prev) == (None, None, None)
    assert entry["key_id"] is None and entry["signature"] is None and entry["agent"] == "a2"


@pytest.mark.parametrize("fault", ["tampered_result", "other_prev", "other_key", "wrong_agent_key"])
async def test_a_signature_that_does_not_verify_refuses_the_batch_and_stores_nothing(api, fault) -> None:
    batch = [result(5), result(4)]
    signer = AgentSigner("a1", KEY_A1)
    header, signed = signed_header(signer, batch)
    if fault == "tampered_result":
        batch[1]["ok"], batch[1]["error"], batch[1]["latency_ms"], batch[1]["status_code"] = False, "timeout", None, None
        expected = "does not verify"
    elif fault == "other_prev":
        header = canonical.format_signature_header(signed.key_id, "ab" * 32, signed.signature)
        expected = "does not verify"
    elif fault == "other_key":  # a key id a1 has not registered
        header, _ = signed_header(AgentSigner("a1", generate_private_key()), batch)
        expected = "has no registered key"
    else:  # signed by a1's key id, but a2 posts it: a2 has no key at all and need not sign
        header, _ = signed_header(AgentSigner("a2", KEY_A1), batch)
        resp = await post(api, "a2", [dict(r) for r in batch], header)
        # kept as what a2 could have sent anyway: unsigned results of its own, vouched by no key
        assert resp.status == 200, await resp.text()
        async with api.state.sessionmaker() as session:
            kept = (await session.scalars(select(Batch))).all()
        assert [(b.agent_id, b.key_id, b.signature) for b in kept] == [("a2", None, None)]
        return
    resp = await post(api, "a1", batch, header)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert "Uptime-Batch-Signature" in body["error"] and expected in body["error"]
    assert (await count(api.state, Result), await count(api.state, Batch), await count(api.state, LogEntry)) == (0, 0, 1)


@pytest.mark.parametrize("header", ["key=zz, prev=none, sig=AAAA", "key=0123abcd, prev=none, sig=" + "A" * 10 + "==",
                                    "", "key=0123abcd prev=none"])
async def test_a_malformed_signature_header_is_422_with_the_expected_format(api, header) -> None:
    resp = await post(api, "a1", [result(5)], header)
    assert resp.status == 422
    assert "expected 'key=<8 hex digits>, prev=<64 hex digits or none>, sig=<base64 of 64 bytes>'" in (await resp.json())["error"]


async def test_a_refused_vote_conflict_keeps_no_batch_and_no_log_entry(api) -> None:
    signer = AgentSigner("a1", KEY_A1)
    one = result(5)
    header, signed = signed_header(signer, [one])
    assert (await post(api, "a1", [one], header)).status == 200
    signer.acknowledged(signed)
    rewrite = dict(one, id=uuid.uuid4().hex, ok=False, error="timeout", latency_ms=None, status_code=None)
    header, _ = signed_header(signer, [rewrite])
    resp = await post(api, "a1", [rewrite], header)
    assert resp.status == 422 and (await resp.json())["rejected"][0]["reason"] == "conflict"
    assert (await count(api.state, Batch), await count(api.state, LogEntry)) == (1, 2)


async def test_key_rotation_through_the_api_keeps_the_old_key_and_logs_the_new(api) -> None:
    new_key = generate_private_key()
    resp = await api.post("/api/v1/agents/a1/keys", json={"public_key": public_key_text(new_key)}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["key_id"] == key_id("a1", new_key) and body["log_index"] == 1
    again = await api.post("/api/v1/agents/a1/keys", json={"public_key": public_key_text(new_key)}, headers=ADMIN)
    assert again.status == 200
    listed = await (await api.get("/api/v1/agents/a1/keys")).json()
    assert [k["key"] for k in listed["keys"]] == [public_key_text(KEY_A1), public_key_text(new_key)]
    # both verify: the old key's evidence stays, the new one signs from now on
    for key in (KEY_A1, new_key):
        batch = [result(10 if key is KEY_A1 else 9)]
        header, _ = signed_header(AgentSigner("a1", key), batch)
        assert (await post(api, "a1", batch, header)).status == 200
    assert await count(api.state, LogEntry) == 4


@pytest.mark.parametrize("body, status, names", [
    ({"public_key": "ed25519:AAAA"}, 422, "32 bytes"),
    ({"public_key": "rsa:AAAA"}, 422, "does not start with 'ed25519:'"),
    ({"public_key": 5}, 422, "public_key"),
    ({}, 422, "public_key: required"),
    ({"public_key": public_key_text(KEY_A1), "x": 1}, 422, "x: unknown field"),
])
async def test_registering_a_bad_key_is_refused_naming_the_field(api, body, status, names) -> None:
    resp = await api.post("/api/v1/agents/a1/keys", json=body, headers=ADMIN)
    assert resp.status == status
    assert names in (await resp.json())["error"]
    assert await count(api.state, AgentKey) == 1


async def test_registering_a_key_needs_the_admin_and_a_known_agent(api) -> None:
    key = public_key_text(generate_private_key())
    assert (await api.post("/api/v1/agents/a1/keys", json={"public_key": key})).status == 401
    assert (await api.post("/api/v1/agents/nobody/keys", json={"public_key": key}, headers=ADMIN)).status == 404
    resp = await api.post("/api/v1/agents", json={"id": "a3", "public_key": key}, headers=ADMIN)
    assert resp.status == 201
    assert (await resp.json())["key"]["key"] == key
    resp = await api.post("/api/v1/agents", json={"id": "a4", "public_key": "ed25519:nope"}, headers=ADMIN)
    assert resp.status == 422
    assert [a["id"] for a in (await (await api.get("/api/v1/agents", headers=ADMIN)).json())["agents"]] == ["a1", "a2", "a3"]


def test_config_refuses_a_bad_public_key_naming_the_key() -> None:
    from collector.config import ConfigError
    with pytest.raises(ConfigError, match=r"agents\.0\.public_key"):
        parse_config({"agents": [{"id": "a1", "public_key": "ed25519:AAAA"}]}, "test")


async def test_agents_add_public_key_registers_and_logs_the_key(database_url, tmp_path) -> None:
    import asyncio
    config = tmp_path / "collector.yml"
    config.write_text(json.dumps({"database_url": database_url, "agents": [{"id": "a1"}]}))
    key = generate_private_key()
    runner = CliRunner()
    result_ = await asyncio.to_thread(runner.invoke, main, ["agents", "add", "a1", "--config", str(config),
                                                             "--public-key", public_key_text(key)])
    assert result_.exit_code == 0, result_.output
    assert f"key {key_id('a1', key)} of agent a1" in result_.output
    again = await asyncio.to_thread(runner.invoke, main, ["agents", "add", "a1", "--config", str(config),
                                                           "--public-key", public_key_text(key)])
    assert again.exit_code == 0 and "already registered" in again.output
    bad = await asyncio.to_thread(runner.invoke, main, ["agents", "add", "a1", "--config", str(config),
                                                         "--public-key", "ed25519:AAAA"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].startswith("error: --public-key: ")
    state = CollectorState.create(parse_config({"database_url": database_url}, "test"))
    try:
        async with state.sessionmaker() as session:
            keys = await store.agent_keys(session, "a1")
            entries = await store.log_entries(session, [k.log_index for k in keys])
    finally:
        await state.engine.dispose()
    assert [(k.public_key, k.registered_by) for k in keys] == [(public_key_text(key), "cli")]
    assert json.loads(entries[keys[0].log_index]) == {"agent": "a1", "key": public_key_text(key), "type": "agent_key",
                                                      "registered_at": canonical.canonical_time(keys[0].registered_at)}


async def test_a_revoked_key_signs_no_more_batches_and_its_revocation_is_logged(api) -> None:
    signer = AgentSigner("a1", KEY_A1)
    batch = [result(6)]
    header, signed = signed_header(signer, batch)
    assert (await post(api, "a1", batch, header)).status == 200
    kid = key_id("a1", KEY_A1)
    resp = await api.delete(f"/api/v1/agents/a1/keys/{kid}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["revoked_at"] is not None and body["revoked_log_index"] == 2
    assert (await api.delete(f"/api/v1/agents/a1/keys/{kid}", headers=ADMIN)).status == 409
    assert (await api.delete("/api/v1/agents/a1/keys/00000000", headers=ADMIN)).status == 404
    assert (await api.delete(f"/api/v1/agents/a1/keys/{kid}")).status == 401
    signer.acknowledged(signed)
    later = [result(5)]
    header, _ = signed_header(signer, later)
    resp = await post(api, "a1", later, header)
    assert resp.status == 422 and "has no registered key" in (await resp.json())["error"]
    async with api.state.sessionmaker() as session:
        entry = json.loads(await session.scalar(select(LogEntry.entry).where(LogEntry.index == 2)))
    assert entry["type"] == "agent_key_revoked" and entry["key"] == public_key_text(KEY_A1)


async def test_the_agents_own_shipper_signs_what_this_collector_verifies_and_chains(database_url, tmp_path,
                                                                                      monkeypatch) -> None:
    """End to end: the agent's spool, signer and shipper against the real collector on loopback,
    signatures required: every batch is accepted and each names the previous one as prev; the
    month's evidence bundle the collector then serves verifies offline with uptime-verify."""
    from evidence.verify import main as verify_main
    from aiohttp.test_utils import TestClient, TestServer
    from agent_helpers import agent_config

    from agent.collector_client import CollectorClient
    from agent.metrics import AgentMetrics
    from agent.shipper import Shipper, signer_for
    from agent.spool import Spool

    monkeypatch.chdir(tmp_path)
    state = make_state(database_url, require=True, policy=True)
    async with TestClient(TestServer(create_app(state))) as http:
        url = str(http.make_url("")).rstrip("/")
        config = agent_config(tmp_path, url, agent_id="a2", token=TOKENS["a2"])
        signer = signer_for(config)
        resp = await http.post("/api/v1/agents/a2/keys", json={"public_key": signer.public_key}, headers=ADMIN)
        assert resp.status == 201, await resp.text()
        metrics = AgentMetrics("a2")
        spool = Spool(config.spool_path(), max_bytes=50 * 1024**2, max_age=3600, metrics=metrics)
        client = CollectorClient(url, TOKENS["a2"], "a2", timeout=5)
        shipper = Shipper(client, spool, metrics, batch_size=2, flush_interval=0.05, signer=signer)
        await spool.open()
        await client.open()
        try:
            for minutes in (9, 8, 7, 6, 5):
                await spool.put(result(minutes))
            assert await shipper.drain(retry=False)
        finally:
            await shipper.stop(flush_timeout=0)
            await client.close()
            await spool.close()
        period = f"{datetime.now(timezone.utc) - timedelta(minutes=9):%Y-%m}"
        resp = await http.get(f"/api/v1/evidence/gold?period={period}")
        assert resp.status == 200, await resp.text()
        bundle = await resp.json()
        (tmp_path / "bundle.json").write_text(json.dumps(bundle))
        key = (await (await http.get("/api/v1/log/key")).text()).strip()
        assert await asyncio.to_thread(verify_main, ["--log-key", key, str(tmp_path / "bundle.json")]) == 0
        assert {b["agent"] for b in bundle["batches"]} >= {"a2"}
        async with state.sessionmaker() as session:
            batches = (await session.scalars(select(Batch).where(Batch.agent_id == "a2").order_by(Batch.log_index))).all()
            stored = await session.scalar(select(func.count()).select_from(Result).where(Result.agent_id == "a2"))
    assert stored == 5 and sum(b.count for b in batches) == 5
    assert all(b.key_id == signer.key_id for b in batches)
    assert [b.prev for b in batches] == [None] + [b.batch_sha256 for b in batches[:-1]]


async def test_a_new_public_key_in_the_config_is_a_rotation_at_the_next_start(database_url, tmp_path,
                                                                             monkeypatch) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.chdir(tmp_path)
    async with TestClient(TestServer(create_app(make_state(database_url)))):
        pass
    state = make_state(database_url)
    new_key = generate_private_key()
    state.config.agents[0].public_key = public_key_text(new_key)
    async with TestClient(TestServer(create_app(state))) as http:
        listed = await (await http.get("/api/v1/agents/a1/keys")).json()
        batch = [result(7)]
        header, _ = signed_header(AgentSigner("a1", KEY_A1), batch)
        assert (await post(http, "a1", batch, header)).status == 200  # the old key still signs
    assert [(k["key"], k["registered_by"], k["log_index"]) for k in listed["keys"]] == [
        (public_key_text(KEY_A1), "config", 0), (public_key_text(new_key), "config", 1)]
