"""The evidence log over HTTP (docs/evidence.md, "The log", "Checkpoints", "Proofs"): a signed
checkpoint that verifies with the served verifier key, inclusion proofs of the entries the
collector appended (keys, batches, maintenance versions) and consistency proofs between sizes,
checked with the offline core; bad parameters are a 400 naming the parameter; two collectors on
one database append to one gapless log. Real collector app on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import stat
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from collector.app import create_app
from collector.config import parse_config
from collector.db import LogEntry
from collector.service import CollectorState
from evidence import canonical, merkle
from evidence.build import AgentSigner
from evidence.checkpoint import parse_vkey, verify_checkpoint
from evidence.keys import generate_private_key, public_key_text
from protocol.timestamps import rfc3339

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
TOKEN = "token-a1-0123456789"
KEY = generate_private_key()


def make_state(database_url: str, key_file) -> CollectorState:
    return CollectorState.create(parse_config({
        "database_url": database_url, "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "evidence": {"log_key_file": str(key_file), "origin": "uptime.test/log"},
        "agents": [{"id": "a1", "token": TOKEN, "public_key": public_key_text(KEY)}],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
        "policies": [{"name": "gold", "preset": "nexcess", "components": ["web"]}],
    }, "test"))


@pytest.fixture
async def api(database_url, aiohttp_client, tmp_path):
    state = make_state(database_url, tmp_path / "keys" / "log.key")
    client = await aiohttp_client(create_app(state))
    client.state = state
    client.key_file = tmp_path / "keys" / "log.key"
    return client


def result(minutes_ago: int) -> dict:
    slot = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return {"id": uuid.uuid4().hex, "check": "web", "slot": rfc3339(slot),
            "started": rfc3339(slot + timedelta(milliseconds=13)), "ok": True, "latency_ms": 12.5,
            "status_code": 200, "error": None, "detail": None}


async def post_signed(client, signer: AgentSigner, results: list[dict]):
    signed = signer.sign([canonical.result_object_from_wire(r) for r in results])
    resp = await client.post("/api/v1/results", json={"agent": "a1", "results": results},
                             headers={"Authorization": f"Bearer {TOKEN}", canonical.SIGNATURE_HEADER: signed.header()})
    assert resp.status == 200, await resp.text()
    signer.acknowledged(signed)
    return signed


async def checkpoint(client):
    key = parse_vkey((await (await client.get("/api/v1/log/key")).text()).strip())
    resp = await client.get("/api/v1/log/checkpoint")
    assert resp.status == 200 and resp.content_type == "text/plain"
    return verify_checkpoint(await resp.text(), key)


async def entries(state) -> list[bytes]:
    async with state.sessionmaker() as session:
        return [bytes(e) for e in (await session.scalars(select(LogEntry.entry).order_by(LogEntry.index))).all()]


async def test_the_log_key_is_made_once_for_the_owner_alone_and_named_by_the_origin(api) -> None:
    assert stat.S_IMODE(os.stat(api.key_file).st_mode) == 0o600
    vkey = (await (await api.get("/api/v1/log/key")).text()).strip()
    assert vkey.startswith("uptime.test/log+")
    # a second collector on the same key file serves the same key
    other = create_app(make_state(api.state.config.database_url, api.key_file))
    from aiohttp.test_utils import TestClient, TestServer
    async with TestClient(TestServer(other)) as second:
        assert (await (await second.get("/api/v1/log/key")).text()).strip() == vkey


async def test_checkpoint_and_inclusion_proofs_cover_keys_batches_and_maintenance_versions(api) -> None:
    signer = AgentSigner("a1", KEY)
    await post_signed(api, signer, [result(5)])
    await post_signed(api, signer, [result(4), result(3)])
    start = datetime.now(timezone.utc) + timedelta(days=10)
    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={
        "policy": "gold", "kind": next(iter(api.state.policies["gold"].maintenance)),
        "start": rfc3339(start), "end": rfc3339(start + timedelta(hours=1)), "note": "db upgrade"})
    assert resp.status == 201, await resp.text()
    record_id = (await resp.json())["id"]
    assert (await api.delete(f"/api/v1/maintenance/{record_id}", headers=ADMIN, json={"reason": "moved"})).status == 200
    logged = await entries(api.state)
    kinds = [json.loads(e)["type"] for e in logged]
    assert kinds == ["agent_key", "batch", "batch", "maintenance", "maintenance"]
    recorded, cancelled = json.loads(logged[3])["record"], json.loads(logged[4])["record"]
    assert recorded["cancelled_at"] is None and cancelled["cancel_reason"] == "moved"
    assert {k: v for k, v in cancelled.items() if not k.startswith("cancel")} == \
           {k: v for k, v in recorded.items() if not k.startswith("cancel")}

    cp = await checkpoint(api)
    assert cp.origin == "uptime.test/log" and cp.size == 5
    assert cp.root == merkle.root([canonical.entry_leaf_hash(e) for e in logged])
    for index, entry in enumerate(logged):
        resp = await api.get(f"/api/v1/log/proof/inclusion?index={index}&size=5")
        assert resp.status == 200
        body = await resp.json()
        proof = [base64.b64decode(h) for h in body["hashes"]]
        merkle.verify_inclusion(index, 5, canonical.entry_leaf_hash(entry), proof, cp.root)
        with pytest.raises(merkle.ProofError):  # a changed entry is not in the log
            merkle.verify_inclusion(index, 5, canonical.entry_leaf_hash(entry + b" "), proof, cp.root)


async def test_consistency_proofs_show_the_log_only_grew(api) -> None:
    signer = AgentSigner("a1", KEY)
    await post_signed(api, signer, [result(9)])
    old = await checkpoint(api)
    for minutes in (8, 7, 6, 5):
        await post_signed(api, signer, [result(minutes)])
    new = await checkpoint(api)
    assert (old.size, new.size) == (2, 6)
    body = await (await api.get(f"/api/v1/log/proof/consistency?first={old.size}&second={new.size}")).json()
    proof = [base64.b64decode(h) for h in body["hashes"]]
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old.size, new.size, bytes(32), new.root, proof)
    # the default second size is the current one
    assert (await (await api.get(f"/api/v1/log/proof/consistency?first={old.size}")).json())["second"] == 6


@pytest.mark.parametrize("query, names", [
    ("inclusion?index=x", "'index'"), ("inclusion", "'index': required"), ("inclusion?index=-1", "'index'"),
    ("inclusion?index=1&size=99", "'size'"), ("inclusion?index=1&size=1", "'index'"),
    ("inclusion?index=99999999999999999999999", "'index'"),
    ("consistency?second=1", "'first': required"), ("consistency?first=2&second=1", "'first'"),
    ("consistency?first=0&second=50", "'second'"), ("consistency?first=1.5", "'first'"),
])
async def test_bad_proof_parameters_are_400_naming_the_parameter(api, query, names) -> None:
    resp = await api.get(f"/api/v1/log/proof/{query}")
    assert resp.status == 400
    assert names in (await resp.json())["error"]


async def test_two_collectors_on_one_database_append_to_one_gapless_log(database_url, tmp_path) -> None:
    from collector import migrate
    await asyncio.to_thread(migrate.upgrade, database_url)
    one, two = (make_state(database_url, tmp_path / "log.key") for _ in range(2))
    from aiohttp.test_utils import TestClient, TestServer
    async with TestClient(TestServer(create_app(one))) as c1, TestClient(TestServer(create_app(two))) as c2:
        batches = [[result(30 - i)] for i in range(12)]

        async def send(client, rows):
            resp = await client.post("/api/v1/results", json={"agent": "a1", "results": rows},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status == 200, await resp.text()

        await asyncio.gather(*(send(c1 if i % 2 else c2, rows) for i, rows in enumerate(batches)))
        logged = await entries(one)
        assert [json.loads(e)["type"] for e in logged] == ["agent_key"] + ["batch"] * 12
        async with one.sessionmaker() as session:
            indices = (await session.scalars(select(LogEntry.index).order_by(LogEntry.index))).all()
        assert list(indices) == list(range(13))
        assert (await checkpoint(c1)).root == (await checkpoint(c2)).root


async def test_evidence_export_writes_a_bundle_uptime_verify_accepts_and_catches_tampering(api, tmp_path, capsys) -> None:
    from click.testing import CliRunner

    from collector.cli import main as collector_main
    from evidence.verify import main as verify_main

    signer = AgentSigner("a1", KEY)
    for minutes in (9, 8, 7):
        await post_signed(api, signer, [result(minutes), ])
    now = datetime.now(timezone.utc)
    config = tmp_path / "collector.yml"
    config.write_text(json.dumps({
        "database_url": api.state.config.database_url, "admin_token": "admin-token-0123456789",
        "evidence": {"log_key_file": str(api.key_file), "origin": "uptime.test/log"},
        "agents": [{"id": "a1", "token": TOKEN, "public_key": public_key_text(KEY)}],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
        "policies": [{"name": "gold", "preset": "nexcess", "components": ["web"]}]}))
    out = tmp_path / "bundle.json"
    period = f"{(now - timedelta(minutes=9)):%Y-%m}"
    run = await asyncio.to_thread(CliRunner().invoke, collector_main, [
        "evidence", "export", "--config", str(config), "--policy", "gold", "--period", period, "-o", str(out)])
    assert run.exit_code == 0, run.output
    bundle = json.loads(out.read_text())
    assert len(bundle["batches"]) == 3 and bundle["log"]["key"] == (await (await api.get("/api/v1/log/key")).text()).strip()
    vkey = bundle["log"]["key"]
    capsys.readouterr()
    assert await asyncio.to_thread(verify_main, ["--log-key", vkey, str(out)]) == 0, capsys.readouterr()
    assert "verified:" in capsys.readouterr().out

    # a result turned from up to down after the fact: its signed statement no longer holds
    tampered = json.loads(out.read_text())
    r = tampered["batches"][1]["results"][0]
    r.update(ok=False, error="timeout", latency_ms=None, status_code=None)
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    assert await asyncio.to_thread(verify_main, ["--log-key", vkey, str(tmp_path / "tampered.json")]) == 1
    assert "NOT VERIFIED:" in capsys.readouterr().out
    # a batch left out breaks the agent's chain
    dropped = json.loads(out.read_text())
    del dropped["batches"][1]
    (tmp_path / "dropped.json").write_text(json.dumps(dropped))
    assert await asyncio.to_thread(verify_main, ["--log-key", vkey, str(tmp_path / "dropped.json")]) == 1
    assert "NOT VERIFIED:" in capsys.readouterr().out


async def test_evidence_export_mistakes_are_one_line_and_exit_2(api, tmp_path) -> None:
    from click.testing import CliRunner

    from collector.cli import main as collector_main
    config = tmp_path / "collector.yml"
    config.write_text(json.dumps({"database_url": api.state.config.database_url,
                                  "evidence": {"log_key_file": str(tmp_path / "missing.key")},
                                  "checks": [{"name": "web", "type": "http", "interval": 60,
                                              "url": "http://127.0.0.1:1/", "timeout": "5s"}]}))
    for args, names in ((["--policy", "web", "--period", "2026-13"], "--period"),
                        (["--policy", "nope", "--period", "2026-11"], "--policy"),
                        (["--policy", "web", "--period", "2026-11"], "evidence.log_key_file")):
        run = await asyncio.to_thread(CliRunner().invoke, collector_main, [
            "evidence", "export", "--config", str(config), *args, "-o", str(tmp_path / "b.json")])
        assert run.exit_code == 2
        # The api fixture's collector runs in this process and may log (a lease taken) while
        # the runner holds stderr: its timestamped log lines are not the command's output.
        lines = [line for line in run.output.strip().splitlines()
                 if not re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z [A-Z]+ +uptime\.", line)]
        assert len(lines) == 1 and names in lines[0], run.output


async def test_the_api_serves_the_same_bundle_for_readers_and_names_bad_parameters(api, tmp_path, capsys) -> None:
    from evidence.verify import main as verify_main

    signer = AgentSigner("a1", KEY)
    for minutes in (6, 5):
        await post_signed(api, signer, [result(minutes)])
    period = f"{(datetime.now(timezone.utc) - timedelta(minutes=6)):%Y-%m}"
    resp = await api.get(f"/api/v1/evidence/gold?period={period}")
    assert resp.status == 200, await resp.text()
    assert "attachment" in resp.headers["Content-Disposition"]
    bundle = await resp.json()
    assert len(bundle["batches"]) == 2 and bundle["report"]["policy"] == "gold"
    out = tmp_path / "from-api.json"
    out.write_text(json.dumps(bundle))
    capsys.readouterr()
    assert await asyncio.to_thread(verify_main, ["--log-key", bundle["log"]["key"], str(out)]) == 0, capsys.readouterr()
    for path, status, names in (("/api/v1/evidence/gold?period=2026-13", 400, "period"),
                                ("/api/v1/evidence/nope?period=2026-11", 404, "nope")):
        resp = await api.get(path)
        assert resp.status == status and names in (await resp.json())["error"]


async def test_a_claim_is_exported_over_the_api_and_the_cli_and_verifies(api, tmp_path, capsys) -> None:
    from click.testing import CliRunner

    from collector.cli import main as collector_main
    from evidence.verify import main as verify_main

    signer = AgentSigner("a1", KEY)
    for minutes in (8, 7, 6):
        await post_signed(api, signer, [result(minutes)])
    now = datetime.now(timezone.utc)
    start, end = rfc3339(now - timedelta(minutes=8)), rfc3339(now - timedelta(minutes=5))
    resp = await api.get("/api/v1/evidence/gold", params={"start": start, "end": end})
    assert resp.status == 200, await resp.text()
    bundle = await resp.json()
    assert bundle["kind"] == "claim" and bundle["claim"]["start"].startswith(start[:16])
    out = tmp_path / "claim-api.json"
    out.write_text(json.dumps(bundle))
    capsys.readouterr()
    assert await asyncio.to_thread(verify_main, ["--log-key", bundle["log"]["key"], str(out)]) == 0, capsys.readouterr()
    assert "claimed outage" in capsys.readouterr().out
    for params, names in (({"start": start}, "'start' and 'end'"), ({"start": end, "end": start}, "'end'"),
                          ({"start": start, "end": end, "period": "2026-11"}, "'period' or 'start'")):
        resp = await api.get("/api/v1/evidence/gold", params=params)
        assert resp.status == 400 and names in (await resp.json())["error"]

    config = tmp_path / "collector.yml"
    config.write_text(json.dumps({
        "database_url": api.state.config.database_url,
        "evidence": {"log_key_file": str(api.key_file), "origin": "uptime.test/log"},
        "agents": [{"id": "a1", "token": TOKEN, "public_key": public_key_text(KEY)}],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}],
        "policies": [{"name": "gold", "preset": "nexcess", "components": ["web"]}]}))
    run = await asyncio.to_thread(CliRunner().invoke, collector_main, [
        "evidence", "export", "--config", str(config), "--policy", "gold", "--claim-start", start,
        "--claim-end", end, "-o", str(tmp_path / "claim-cli.json")])
    assert run.exit_code == 0, run.output
    assert await asyncio.to_thread(verify_main, [str(tmp_path / "claim-cli.json")]) == 0
    for args, names in ((["--period", "2026-11", "--claim-start", start, "--claim-end", end], "--period"),
                        (["--claim-start", start], "--claim-end"),
                        (["--claim-start", end, "--claim-end", start], "--claim-end")):
        run = await asyncio.to_thread(CliRunner().invoke, collector_main, [
            "evidence", "export", "--config", str(config), "--policy", "gold", *args, "-o", str(tmp_path / "x.json")])
        assert run.exit_code == 2 and names in run.output.strip().splitlines()[-1], run.output
