"""The agent signs every batch it ships: a real aiohttp server on loopback stands in for the
collector, records each POST's header and body, and checks the signature and the `prev` chain as
the collector will (docs/evidence.md, "What an agent signs")."""
from __future__ import annotations

import json
import stat
import uuid

import pytest
from agent_helpers import REPO, Server, agent_config  # first: puts the repo on sys.path
from aiohttp import web
from click.testing import CliRunner

from agent.cli import main
from agent.collector_client import CollectorClient
from agent.metrics import AgentMetrics
from agent.shipper import BatchSigner, Shipper, signer_for
from agent.spool import Spool
from evidence.canonical import (
    SIGNATURE_HEADER,
    batch_hash,
    parse_signature_header,
    result_object_from_wire,
    statement_for_results,
    verify_batch_signature,
)
from evidence.keys import key_id, load_private_key, parse_public_key
from protocol.checks import ConfigError


def result(n: int, **extra) -> dict:
    # whitespace and a +02:00 offset: the collector's model strips and converts them, so the
    # statement must be built from the validated values, not the raw ones
    return {"id": uuid.uuid4().hex, "check": " web ", "slot": "2026-11-25T04:40:00+02:00",
            "started": "2026-11-25T02:40:00.013000Z", "ok": True, "latency_ms": 1.5, "status_code": 200,
            "error": None, "detail": f"n={n}", **extra}


class SigningCollector:
    """POST /api/v1/results: records the header and the body; answers the next of `statuses`
    with the error of the same place in `errors` (else "try later"), then 200."""

    def __init__(self):
        self.posts: list[tuple[str | None, dict]] = []
        self.statuses: list[int] = []
        self.errors: list[str] = []
        app = web.Application()
        app.router.add_post("/api/v1/results", self._results)
        self.server = Server(app)

    async def _results(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.posts.append((request.headers.get(SIGNATURE_HEADER), body))
        status = self.statuses.pop(0) if self.statuses else 200
        error = self.errors.pop(0) if self.errors else "try later"
        return web.json_response({"accepted": len(body["results"]), "duplicates": 0} if status == 200
                                 else {"error": error}, status=status)

    def verified(self, index: int, public_key_text: str) -> tuple[str | None, str]:
        """(prev, batch hash) of post `index`, after checking its signature as the collector will."""
        header, body = self.posts[index]
        assert header is not None, "batch sent unsigned"
        kid, prev, signature = parse_signature_header(header)
        public = parse_public_key(public_key_text)
        assert kid == key_id(body["agent"], public)
        objects = [result_object_from_wire(r) for r in body["results"]]
        statement = statement_for_results(body["agent"], prev, objects)
        assert verify_batch_signature(public, statement, signature)
        # a changed result no longer verifies: the signature covers the results themselves
        changed = dict(body["results"][0], ok=not body["results"][0]["ok"])
        tampered = statement_for_results(body["agent"], prev, [result_object_from_wire(changed), *objects[1:]])
        assert not verify_batch_signature(public, tampered, signature)
        return prev, batch_hash(statement)


@pytest.fixture
async def collector():
    fake = SigningCollector()
    await fake.server.start()
    yield fake
    await fake.server.stop()


class Pipeline:
    """spool -> shipper (with the signer the Agent builds from its config) -> collector client."""

    def __init__(self, tmp_path, url, **options):
        self.config = agent_config(tmp_path, url)
        self.metrics = AgentMetrics("a1")
        self.spool = Spool(self.config.spool_path(), max_bytes=50 * 1024**2, max_age=3600, metrics=self.metrics)
        self.client = CollectorClient(url, "tok-a1", "a1", timeout=2)
        self.signer = signer_for(self.config)
        self.shipper = Shipper(self.client, self.spool, self.metrics, batch_size=50, flush_interval=0.05,
                               signer=self.signer, **options)

    async def __aenter__(self):
        await self.spool.open()
        await self.client.open()
        return self

    async def __aexit__(self, *exc):
        await self.shipper.stop(flush_timeout=0)
        await self.client.close()
        await self.spool.close()

    async def ship(self, *results: dict) -> None:
        for item in results:
            await self.spool.put(item)
        assert await self.shipper.drain(retry=False)


async def test_batches_are_signed_and_chained_across_acks_refusals_and_a_restart(tmp_path, collector):
    async with Pipeline(tmp_path, collector.server.url) as first:
        public = first.signer.public_key
        key_path = first.config.key_path()
        assert key_path == tmp_path / "agent-a1.key"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

        await first.ship(result(1), result(2))
        prev0, hash0 = collector.verified(0, public)
        assert prev0 is None  # a new key file: the chain's first statement

        # refused with a 503: not acknowledged, so `prev` stays; resent as the same statement
        collector.statuses = [503]
        await first.spool.put(result(3))
        assert not await first.shipper.drain(retry=False)
        assert await first.shipper.drain(retry=False)
        prev1, hash1 = collector.verified(1, public)
        prev2, hash2 = collector.verified(2, public)
        assert prev1 == prev2 == hash0 and hash1 == hash2
        assert collector.posts[1][0] == collector.posts[2][0]  # Ed25519 is deterministic

    # a restart: the key and the chain are read back from beside the spool
    async with Pipeline(tmp_path, collector.server.url) as second:
        assert second.signer.public_key == public
        await second.ship(result(4))
        prev3, _ = collector.verified(3, public)
        assert prev3 == hash2
    state = json.loads((tmp_path / "chain-a1.json").read_text())
    assert state["key_id"] == key_id("a1", parse_public_key(public))
    assert [entry for entry in tmp_path.iterdir() if entry.name.endswith(".tmp")] == []


NO_KEY = "header Uptime-Batch-Signature: key: agent 'a1' has no registered key 0dff71b0 (register it)"
UNSIGNED = "header Uptime-Batch-Signature: missing; agent 'a1' must sign its batches (require_signatures)"


async def test_a_refused_signature_sends_the_batch_unsigned_and_signs_again_later(tmp_path, collector):
    # as the collector answers for a key it has not registered: the results are not at fault
    collector.statuses, collector.errors = [422], [NO_KEY]
    async with Pipeline(tmp_path, collector.server.url, unsigned_seconds=0) as pipe:
        await pipe.ship(result(1), result(2))
        assert [header is None for header, _ in collector.posts] == [False, True]
        assert collector.posts[0][1] == collector.posts[1][1]
        assert pipe.spool.count == 0 and pipe.spool.rejected_bytes == 0
        assert pipe.metrics.registry.get_sample_value("uptime_agent_ship_failures_total",
                                                      {"reason": "signature"}) == 1
        await pipe.ship(result(3))  # the unsigned time is over (0 s here): signed again
        prev, _ = collector.verified(2, pipe.signer.public_key)
        assert prev is None  # the unsigned batch is no statement of this agent's chain


async def test_a_collector_that_requires_signatures_keeps_the_results_in_the_spool(tmp_path, collector):
    # the key refused, then the unsigned batch refused
    collector.statuses, collector.errors = [422, 401], [NO_KEY, UNSIGNED]
    async with Pipeline(tmp_path, collector.server.url) as pipe:
        await pipe.spool.put(result(1))
        await pipe.spool.put(result(2))
        assert not await pipe.shipper.drain(retry=False)
        assert [header is None for header, _ in collector.posts] == [False, True]
        assert pipe.spool.count == 2 and pipe.spool.rejected_bytes == 0
        # the key is registered now: a 401 for an unsigned batch ends the unsigned time at once
        assert await pipe.shipper.drain(retry=False)
        prev, _ = collector.verified(2, pipe.signer.public_key)
        assert prev is None and len(collector.posts[2][1]["results"]) == 2


async def test_a_new_key_starts_a_new_chain(tmp_path, collector):
    async with Pipeline(tmp_path, collector.server.url) as first:
        await first.ship(result(1))
    (tmp_path / "agent-a1.key").unlink()
    async with Pipeline(tmp_path, collector.server.url) as second:
        await second.ship(result(2))
        prev, _ = collector.verified(1, second.signer.public_key)
    assert prev is None
    assert collector.posts[0][0].split(",")[0] != collector.posts[1][0].split(",")[0]  # another key id


async def test_an_unsignable_result_goes_unsigned_and_the_rest_stay_signed(tmp_path, collector):
    async with Pipeline(tmp_path, collector.server.url) as pipe:
        await pipe.ship(result(1, ok="maybe"))
        assert collector.posts[0][0] is None
        await pipe.ship(result(2))
        prev, _ = collector.verified(1, pipe.signer.public_key)
        assert prev is None  # the unsigned batch was acknowledged, but it is no statement


def test_a_corrupt_chain_state_or_key_file_is_named(tmp_path):
    config = agent_config(tmp_path, "http://127.0.0.1:9")
    signer_for(config)  # makes the key
    (tmp_path / "chain-a1.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"agent\.key_file: .*chain-a1\.json: not a chain state file"):
        signer_for(config)
    (tmp_path / "chain-a1.json").unlink()
    (tmp_path / "agent-a1.key").write_text("garbage")
    with pytest.raises(ConfigError, match=r"agent-a1\.key: not a PEM private key"):
        signer_for(config)


def test_a_configured_key_file_is_used(tmp_path):
    key_file = str(tmp_path / "k" / "{agent_id}.pem")
    config = agent_config(tmp_path, "http://127.0.0.1:9", agent={"id": "a1", "key_file": key_file})
    signer = signer_for(config)
    assert (tmp_path / "k" / "a1.pem").exists()
    assert isinstance(signer, BatchSigner)
    assert signer.chain_path == tmp_path / "chain-a1.json"


def _write_config(tmp_path) -> str:
    path = tmp_path / "agent.yml"
    path.write_text("collector:\n  url: http://127.0.0.1:9\n"
                    f"spool:\n  path: {tmp_path}/data/spool-{{agent_id}}.sqlite\n")
    return str(path)


def test_key_show_makes_the_key_once_and_prints_it(tmp_path):
    config = _write_config(tmp_path)
    runner = CliRunner()
    made = runner.invoke(main, ["key", "show", "--config", config, "--id", "eu-west"], env={"UPTIME_AGENT_ID": None})
    assert made.exit_code == 0, made.output
    key_path = tmp_path / "data" / "agent-eu-west.key"
    assert "made a new key in" in made.stderr and str(key_path) in made.stderr
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    lines = dict(line.split(":", 1) for line in made.stdout.splitlines())
    private = load_private_key(key_path)
    public = parse_public_key(lines["public_key"].strip())
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()
    assert lines["key_id"].strip() == key_id("eu-west", private)

    again = runner.invoke(main, ["key", "show", "--config", config, "--id", "eu-west"])
    assert again.exit_code == 0 and again.stderr == "" and again.stdout == made.stdout


def test_key_show_refuses_a_bad_key_file_with_its_path(tmp_path):
    config = _write_config(tmp_path)
    key_path = tmp_path / "data" / "agent-eu-west.key"
    key_path.parent.mkdir()
    key_path.write_text("not a key")
    key_path.chmod(0o600)
    shown = CliRunner().invoke(main, ["key", "show", "--config", config, "--id", "eu-west"])
    assert shown.exit_code == 2
    assert shown.stderr.strip() == (f"{config}: agent.key_file: {key_path}: not a PEM private key (expected "
                                    "-----BEGIN PRIVATE KEY----- with an Ed25519 key)")
    assert "Traceback" not in shown.output
    key_path.chmod(0o644)
    shown = CliRunner().invoke(main, ["key", "show", "--config", config, "--id", "eu-west"])
    assert shown.exit_code == 2 and "chmod 600" in shown.stderr


def test_key_show_needs_an_agent_id(tmp_path):
    shown = CliRunner().invoke(main, ["key", "show", "--config", _write_config(tmp_path)],
                               env={"UPTIME_AGENT_ID": None})
    assert shown.exit_code == 2
    assert shown.stderr.strip().endswith("agent.id: not set: give agent.id, --id or env UPTIME_AGENT_ID")
    assert not (tmp_path / "data").exists()


def test_the_docs_name_the_command():
    text = (REPO / "docs" / "evidence.md").read_text()
    assert "uptime-agent key show" in text and "chain-<id>.json" in text
