"""Evidence bundles carry recurring maintenance series (docs/evidence.md, "The bundle"): each
series' versions and its occurrences' cancellations with their log proofs, expanded by the
verifier with collector.rules.recurrence, so a report that relied on a series verifies figure for
figure, and a series changed, forged or left without its cancellation is named.

The scenario: policy numezis-business (planned maintenance longer than 15 minutes on 72 hours'
notice, Numezis SaaS SLA §4.1) over one component probed every 5 minutes by three agents from 9
to 11 November 2026; a daily planned series 02:00-03:00 UTC recorded on 20 October; every agent
down 02:00-02:30 on both days; the occurrence of 10 November cancelled on 9 November.
"""
from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from collector.rules import load_policy
from collector.rules.model import Observation
from evidence.build import AgentSigner, bundle_from_observations
from evidence.bundle import parse_bundle, save_bundle
from evidence.keys import generate_private_key, public_key_text
from evidence.verify import NotVerified, main, verify_bundle

UTC = timezone.utc
AGENTS = ("a1", "a2", "a3")
T0, T1 = datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC)
KEPT = datetime(2026, 11, 9, 2, tzinfo=UTC)        # an occurrence that stands: its outage is excluded
CANCELLED = datetime(2026, 11, 10, 2, tzinfo=UTC)  # an occurrence cancelled: its outage counts
SERIES = {"id": 1, "policy": "numezis-business", "kind": "planned", "start": datetime(2026, 11, 1, 2, tzinfo=UTC),
          "rrule": "FREQ=DAILY", "duration_seconds": 3600, "timezone": "UTC", "note": "nightly",
          "recorded_at": datetime(2026, 10, 20, tzinfo=UTC), "recorded_by": "api", "author": "ops",
          "stated_announced": None, "cancelled_at": None, "cancelled_by": None, "cancel_reason": None,
          "cancelled_occurrences": [{"start": CANCELLED, "cancelled_at": datetime(2026, 11, 9, 12, tzinfo=UTC),
                                     "cancelled_by": "api", "cancel_reason": "not needed"}]}


def _down(t: datetime) -> bool:
    return any(s <= t < s + timedelta(minutes=30) for s in (KEPT, CANCELLED))


@pytest.fixture(scope="module")
def made():
    policy = load_policy("numezis-business", components=["app"], interval="5m")
    observations = []
    t = T0
    while t < T1:
        observations += [Observation(a, "app", t, not _down(t)) for a in AGENTS]
        t += timedelta(minutes=5)
    bundle, keeper = bundle_from_observations(
        policy, "2026-11", observations, agent_keys={a: generate_private_key() for a in AGENTS},
        log_key=generate_private_key(), results_per_batch=4, series=[SERIES], now=datetime(2026, 12, 3, tzinfo=UTC))
    return policy, bundle, keeper


def _verify(data: dict):
    return verify_bundle(parse_bundle(copy.deepcopy(data)))


def test_a_report_relying_on_a_series_verifies_figure_for_figure(made) -> None:
    _, bundle, _ = made
    [series] = bundle["series"]
    assert [v["record"]["rrule"] for v in series["versions"]] == ["FREQ=DAILY"]
    assert [c["record"]["start"] for c in series["cancellations"]] == ["2026-11-10T02:00:00Z"]
    report = bundle["report"]
    # the kept occurrence excludes its 30 minutes; the cancelled one excludes nothing
    assert (report["outage_minutes"], report["excluded_minutes"], report["downtime_minutes"]) == (60, 30, 30)
    by_start = {m["start"]: m for m in report["maintenance"]}
    assert by_start["2026-11-10T02:00:00Z"]["cancelled_at"] == "2026-11-09T12:00:00Z"
    verified = _verify(bundle)
    assert (verified.series, verified.cancelled_occurrences) == (1, 1)
    assert verified.report["excluded_minutes"] == 30


def test_uptime_verify_reads_the_series_from_the_file(made, tmp_path, capsys) -> None:
    _, bundle, _ = made
    path = tmp_path / "bundle.json"
    save_bundle(bundle, path)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 recurring maintenance series (1 occurrences cancelled)" in out and "excluded_minutes" in out


def _free_index(bundle: dict) -> int:
    """A log index no entry of the bundle claims (the forged series pretends to be there)."""
    used = {b["log_index"] for b in bundle["batches"]}
    used |= {k["log_index"] for a in bundle["agents"] for k in a["keys"]}
    used |= {v["log_index"] for m in bundle["maintenance"] for v in m["versions"]}
    used |= {v["log_index"] for s in bundle["series"] for v in s["versions"] + s["cancellations"]}
    return next((i for i in range(bundle["proof"]["tree_size"]) if i not in used), bundle["proof"]["tree_size"])


def _rrule(b):
    b["series"][0]["versions"][0]["record"]["rrule"] = "FREQ=DAILY;INTERVAL=2"


def _recorded_at(b):
    b["series"][0]["versions"][0]["record"]["recorded_at"] = "2026-10-01T00:00:00Z"


def _drop_cancellation(b):
    b["series"][0]["cancellations"] = []


def _drop_series(b):
    b["series"] = []


def _forged(b):
    record = dict(b["series"][0]["versions"][0]["record"], id=99, start="2026-11-10T02:00:00Z")
    b["series"].append({"versions": [{"log_index": _free_index(b), "record": record}], "cancellations": []})
    b["series"][0]["cancellations"] = []


def _other_series(b):
    b["series"][0]["cancellations"][0]["record"]["series_id"] = 2


def _cancelled_earlier(b):
    b["series"][0]["cancellations"][0]["record"]["cancelled_at"] = "2026-11-01T00:00:00Z"


TAMPERING = [
    (_rrule, "the log does not hold maintenance series 1 (log entry"),
    (_recorded_at, "the log does not hold maintenance series 1 (log entry"),
    (_drop_cancellation, "figure 'excluded_minutes': the report says 30, the evidence gives 60"),
    (_drop_series, "figure '"),
    (_forged, "maintenance series 99"),
    (_other_series, "cancellation at log entry"),
    (_cancelled_earlier, "the cancellation of maintenance series 1's occurrence at 2026-11-10T02:00:00Z"),
]


@pytest.mark.parametrize("tamper, names", TAMPERING, ids=[t.__name__.strip("_") for t, _ in TAMPERING])
def test_a_series_changed_forged_or_left_out_is_named(made, tamper, names) -> None:
    _, bundle, _ = made
    tampered = copy.deepcopy(bundle)
    tamper(tampered)
    with pytest.raises(NotVerified) as err:
        _verify(tampered)
    assert names in str(err.value), str(err.value)


def test_the_command_exits_1_naming_a_changed_series(made, tmp_path, capsys) -> None:
    _, bundle, _ = made
    tampered = copy.deepcopy(bundle)
    _rrule(tampered)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    assert main([str(path)]) == 1
    assert "NOT VERIFIED: the log does not hold maintenance series 1" in capsys.readouterr().out


def test_a_series_that_cannot_touch_the_period_stays_out(made) -> None:
    policy, _, keeper = made
    # December's report: the daily series goes on, so it is there; a month before it began, not
    assert len(keeper.export_report(policy, "2026-12", now=datetime(2027, 1, 3, tzinfo=UTC))["series"]) == 1
    assert keeper.export_report(policy, "2026-10", now=datetime(2026, 12, 3, tzinfo=UTC))["series"] == []


@pytest.mark.parametrize("start, end, verified, excluded", [
    (KEPT, KEPT + timedelta(minutes=30), 30, 30),
    (CANCELLED, CANCELLED + timedelta(minutes=30), 30, 0),
])
def test_claim_bundles_carry_the_series_too(made, start, end, verified, excluded) -> None:
    policy, _, keeper = made
    claim = keeper.export_claim(policy, start, end, now=datetime(2026, 12, 3, tzinfo=UTC))
    assert len(claim["series"]) == 1
    assert (claim["report"]["verified_minutes"], claim["report"]["excluded_minutes"]) == (verified, excluded)
    assert _verify(claim).series == 1
    tampered = copy.deepcopy(claim)
    _drop_cancellation(tampered)
    if excluded == 0:   # the claim relied on the cancellation: without it the figures differ
        with pytest.raises(NotVerified, match="figure '"):
            _verify(tampered)
    _rrule(tampered)
    with pytest.raises(NotVerified, match="maintenance series 1"):
        _verify(tampered)


# -- through the collector: series recorded over the API, the bundle exported by the API and CLI --

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
# Nexcess: a majority of at least two reporting agents
TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}
KEYS = {a: generate_private_key() for a in TOKENS}
M, H = timedelta(minutes=1), timedelta(hours=1)


def _config(database_url: str, key_file) -> dict:
    return {
        "database_url": database_url, "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "evidence": {"log_key_file": str(key_file), "origin": "uptime.test/log"},
        "agents": [{"id": a, "token": t, "public_key": public_key_text(KEYS[a])} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s",
                    "outage": {"quorum": "all", "min_duration": "2m"}}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
    }


def _z(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_the_collectors_bundle_of_a_month_with_a_series_verifies_and_matches_its_report(
        database_url, aiohttp_client, tmp_path, capsys) -> None:
    from click.testing import CliRunner

    from collector.app import create_app
    from collector.cli import main as collector_main
    from collector.config import parse_config
    from collector.service import CollectorState
    from evidence import canonical

    key_file = tmp_path / "keys" / "log.key"
    state = CollectorState.create(parse_config(_config(database_url, key_file), "test"))
    api = await aiohttp_client(create_app(state))
    # minutes 2-6 of the hour two hours ago are down (a verified outage of 5 minutes)
    base = (datetime.now(UTC) - 2 * H).replace(minute=0, second=0, microsecond=0)
    for agent, token in TOKENS.items():
        signer = AgentSigner(agent, KEYS[agent])
        results = [{"id": uuid.uuid4().hex, "check": "web", "slot": _z(base + i * M), "started": _z(base + i * M),
                    "ok": not 2 <= i < 7, "latency_ms": 12.5 if not 2 <= i < 7 else None,
                    "status_code": 200 if not 2 <= i < 7 else None, "error": None if not 2 <= i < 7 else "connect",
                    "detail": None} for i in range(12)]
        for i in range(0, 12, 4):
            batch = results[i:i + 4]
            signed = signer.sign([canonical.result_object_from_wire(r) for r in batch])
            resp = await api.post("/api/v1/results", json={"agent": agent, "results": batch},
                                  headers={"Authorization": f"Bearer {token}",
                                           canonical.SIGNATURE_HEADER: signed.header()})
            assert resp.status == 200, await resp.text()
            signer.acknowledged(signed)
    await state.evaluator.tick()
    # Nexcess: emergency maintenance may be recorded after it began; its occurrence at `base`
    # covers the outage, the one an hour before is cancelled
    resp = await api.post("/api/v1/maintenance", headers=ADMIN, json={
        "policy": "sla", "kind": "emergency", "start": _z(base - 3 * H), "rrule": "FREQ=HOURLY;COUNT=8",
        "duration": "10m"})
    assert resp.status == 201, await resp.text()
    series_id = (await resp.json())["id"]
    resp = await api.delete(f"/api/v1/maintenance/series/{series_id}/occurrences/{_z(base - H)}", headers=ADMIN,
                            json={"reason": "did not happen"})
    assert resp.status == 200, await resp.text()
    period = f"{base:%Y-%m}"
    live = await (await api.get("/api/v1/reports/sla", params={"period": period})).json()
    assert (live["outage_minutes"], live["excluded_minutes"], live["downtime_minutes"]) == (5, 5, 0)

    resp = await api.get(f"/api/v1/evidence/sla?period={period}")
    assert resp.status == 200, await resp.text()
    bundle = await resp.json()
    [series] = bundle["series"]
    assert [c["record"]["start"] for c in series["cancellations"]] == [_z(base - H)]
    for name in ("outage_minutes", "excluded_minutes", "downtime_minutes", "availability_percent"):
        assert bundle["report"][name] == live[name], name
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--log-key", bundle["log"]["key"], str(path)]) == 0
    assert "1 recurring maintenance series" in capsys.readouterr().out

    # the CLI builds the same series section from the database
    config = tmp_path / "collector.yml"
    config.write_text(json.dumps(_config(database_url, key_file)))
    out = tmp_path / "cli.json"
    run = await asyncio.to_thread(CliRunner().invoke, collector_main, [
        "evidence", "export", "--config", str(config), "--policy", "sla", "--period", period, "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(out.read_text())["series"] == bundle["series"]

    tampered = copy.deepcopy(bundle)
    tampered["series"][0]["versions"][0]["record"]["duration_seconds"] = 3600
    path.write_text(json.dumps(tampered))
    assert await asyncio.to_thread(main, [str(path)]) == 1
    assert f"maintenance series {series_id}" in capsys.readouterr().out
