"""Incidents: opened, updated and resolved by the admin over HTTP and from the CLI, every update
stamped with the collector's own time and who recorded it, append-only, linked to verified
windows and maintenance; shown on /incidents and the front page's partial, and in the feed
(Numezis SaaS SLA §6 and §9)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree

import pytest
import sqlalchemy as sa
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from collector import migrate
from collector.app import create_app
from collector.cli import main as cli_main
from collector.config import parse_config
from collector.db import Base, make_engine
from collector.service import CollectorState
from collector.status.incidents import open_incidents
from collector.status.views import ENV

UTC = timezone.utc
M = timedelta(minutes=1)
H = timedelta(hours=1)
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TOKENS = {"a1": "token-a1-0123456789", "a2": "token-a2-0123456789"}
ATOM = "{http://www.w3.org/2005/Atom}"
INCIDENT_TABLES = {"incidents", "incident_updates", "incident_links"}


def config_data(database_url: str) -> dict:
    return {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": [{"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/",
                    "outage": {"quorum": "all", "min_duration": "2m"}},
                   {"name": "db", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/"}],
        "policies": [{"name": "sla", "preset": "nexcess", "components": ["web"]}],
    }


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def verified_window(http) -> int:
    """Both agents fail minutes 2-6 of the hour two hours ago: one verified window of `sla`."""
    base = (datetime.now(UTC) - 2 * H).replace(minute=0, second=0, microsecond=0)
    for agent, token in TOKENS.items():
        results = [{"id": uuid.uuid4().hex, "check": "web", "slot": (base + i * M).isoformat(),
                    "started": (base + i * M).isoformat(), "ok": not 2 <= i < 7, "latency_ms": None,
                    "status_code": None, "error": None if not 2 <= i < 7 else "connect"} for i in range(12)]
        resp = await http.post("/api/v1/results", json={"agent": agent, "results": results},
                               headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, await resp.text()
    await http.state.evaluator.tick()
    async with http.state.sessionmaker() as session:
        ids = (await session.scalars(sa.text("SELECT id FROM outage_windows WHERE policy = 'sla'"))).all()
    assert len(ids) == 1
    return ids[0]


@pytest.fixture
async def http(database_url, aiohttp_client):
    state = CollectorState.create(parse_config(config_data(database_url), "test"))
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def test_open_update_resolve_over_http_with_the_collectors_own_time_and_bad_fields_named(http) -> None:
    window_id = await verified_window(http)
    start = (datetime.now(UTC) - H).replace(second=0, microsecond=0)
    resp = await http.post("/api/v1/maintenance", headers=ADMIN, json={
        "policy": "sla", "kind": "emergency", "start": start.isoformat(), "end": (start + 30 * M).isoformat()})
    assert resp.status == 201, await resp.text()
    maintenance_id = (await resp.json())["id"]

    body = {"title": "Checkout errors", "impact": "major", "policies": ["sla"], "message": "Looking into 502s",
            "author": "ops", "windows": [window_id]}
    # without the admin token: refused, and nothing recorded
    assert (await http.post("/api/v1/incidents", json=body)).status == 401
    assert (await http.post("/api/v1/incidents", json=body, headers={"Authorization": "Bearer nope"})).status == 401
    assert (await (await http.get("/api/v1/incidents")).json())["incidents"] == []

    before = datetime.now(UTC)
    resp = await http.post("/api/v1/incidents", headers=ADMIN, json=body)
    assert resp.status == 201, await resp.text()
    opened = await resp.json()
    after = datetime.now(UTC)
    assert before <= at(opened["created_at"]) <= after
    assert (opened["status"], opened["open"], opened["resolved_at"], opened["created_by"]) == \
        ("investigating", True, None, "api")
    [first] = opened["updates"]
    assert (first["status"], first["message"], first["recorded_by"], first["author"]) == \
        ("investigating", "Looking into 502s", "api", "ops")
    assert first["recorded_at"] == opened["created_at"]
    assert [w["id"] for w in opened["windows"]] == [window_id] and opened["windows"][0]["policy"] == "sla"
    iid = opened["id"]

    for status in ("identified", "monitoring"):
        resp = await http.post(f"/api/v1/incidents/{iid}/updates", headers=ADMIN,
                               json={"status": status, "message": f"now {status}"})
        assert resp.status == 201, await resp.text()
    assert (await http.post(f"/api/v1/incidents/{iid}/updates", json={"status": "monitoring", "message": "x"})).status == 401
    resp = await http.post(f"/api/v1/incidents/{iid}/links", headers=ADMIN,
                           json={"maintenance": [maintenance_id], "windows": [window_id]})
    assert resp.status == 200, await resp.text()
    linked = await resp.json()
    assert [m["id"] for m in linked["maintenance"]] == [maintenance_id]
    assert len(linked["windows"]) == 1                         # linking it again adds nothing

    # open incidents: in the API, on the page and in the front page's partial
    listed = (await (await http.get("/api/v1/incidents", params={"state": "open"})).json())["incidents"]
    assert [(i["id"], i["status"]) for i in listed] == [(iid, "monitoring")]
    page = await (await http.get("/incidents")).text()
    open_part = page.split('id="open-h"')[1].split('id="history-h"')[0]
    assert "Checkout errors" in open_part and "Major impact" in open_part and "now identified" in open_part
    async with http.state.sessionmaker() as session:
        views = await open_incidents(session, datetime.now(UTC), http.state.policies)
    partial = ENV.get_template("_incidents_open.html").render(open_incidents=views)
    assert "Checkout errors" in partial and "Major impact" in partial and "Monitoring" in partial
    assert "now monitoring" in partial and "now identified" not in partial     # the latest update only
    assert f'<time datetime="{listed[0]["updates"][-1]["recorded_at"]}">' in partial and " UTC</time>" in partial
    # the front page shows it at the top, before the services
    front = await (await http.get("/")).text()
    assert front.index("Checkout errors") < front.index('id="services-h"') and "now monitoring" in front

    resp = await http.post(f"/api/v1/incidents/{iid}/postmortem", headers=ADMIN,
                           json={"postmortem_url": "https://blog.example/postmortem-42"})
    assert resp.status == 200, await resp.text()
    again = await http.post(f"/api/v1/incidents/{iid}/postmortem", headers=ADMIN,
                            json={"postmortem_url": "https://blog.example/other"})
    assert again.status == 409 and "it stands" in (await again.json())["error"]

    resp = await http.post(f"/api/v1/incidents/{iid}/updates", headers=ADMIN,
                           json={"status": "resolved", "message": "Fixed the pool size"})
    resolved = await resp.json()
    assert resp.status == 201 and resolved["open"] is False and resolved["status"] == "resolved"
    assert resolved["resolved_at"] == resolved["updates"][-1]["recorded_at"]
    times = [at(u["recorded_at"]) for u in resolved["updates"]]
    assert [u["status"] for u in resolved["updates"]] == ["investigating", "identified", "monitoring", "resolved"]
    assert times == sorted(times) and after <= times[-1] <= datetime.now(UTC)
    late = await http.post(f"/api/v1/incidents/{iid}/updates", headers=ADMIN, json={"status": "monitoring", "message": "x"})
    assert late.status == 409 and f"incident {iid} was resolved at" in (await late.json())["error"]
    shown = await (await http.get(f"/api/v1/incidents/{iid}")).json()
    assert shown["updates"] == resolved["updates"]              # the refused update left nothing
    assert shown["postmortem_url"] == "https://blog.example/postmortem-42" and shown["postmortem_by"] == "api"

    page = await (await http.get("/incidents")).text()
    history = page.split('id="history-h"')[1]
    assert "No incident is open." in page and "Checkout errors" in history and "Fixed the pool size" in history
    assert 'href="https://blog.example/postmortem-42"' in history
    assert "Verified outage of sla from" in history and "/api/v1/outages?policy=sla" in history
    assert f"Maintenance {maintenance_id} of sla" in history
    async with http.state.sessionmaker() as session:
        assert await open_incidents(session, datetime.now(UTC), http.state.policies) == []
    assert ENV.get_template("_incidents_open.html").render(open_incidents=[]).strip() == ""

    feed = ElementTree.fromstring(await (await http.get("/feed.atom")).read())
    entries = {e.find(f"{ATOM}id").text.rsplit("#", 1)[1]: e for e in feed.iter(f"{ATOM}entry")}
    mine = sorted(k for k in entries if k.startswith(f"incident-{iid}-"))
    assert [k.rsplit("-", 1)[0] if "-update-" in k else k for k in mine] == \
        [f"incident-{iid}-opened", f"incident-{iid}-resolved", f"incident-{iid}-update", f"incident-{iid}-update"]
    resolved_entry = entries[f"incident-{iid}-resolved"]
    assert resolved_entry.find(f"{ATOM}category").get("term") == "incident-resolved"
    assert "Fixed the pool size" in resolved_entry.find(f"{ATOM}summary").text
    assert resolved_entry.find(f"{ATOM}link").get("href").endswith(f"/incidents#incident-{iid}")

    await bad_fields_are_refused_naming_the_field_and_nothing_is_recorded(http, [resolved])


async def bad_fields_are_refused_naming_the_field_and_nothing_is_recorded(http, earlier: list) -> None:
    """(Part of the test above, sharing its collector: a collector's start is most of the cost.)"""
    ok = {"title": "DB slow", "impact": "minor", "policies": ["sla"], "message": "Investigating"}
    opened = await (await http.post("/api/v1/incidents", headers=ADMIN, json=ok)).json()
    iid = opened["id"]
    cases = [
        ("/api/v1/incidents", {**ok, "status": "fixed"}, 422, "status: Input should be 'investigating'"),
        ("/api/v1/incidents", {**ok, "impact": "huge"}, 422, "impact: Input should be 'none'"),
        ("/api/v1/incidents", {**ok, "policies": ["sla", "nope"]}, 422, "policies[1]: unknown policy 'nope'"),
        ("/api/v1/incidents", {**ok, "policies": []}, 422, "policies: List should have at least 1 item"),
        ("/api/v1/incidents", {**ok, "postmortem_url": "ftp://x.example/pm"}, 422,
         "postmortem_url: 'ftp://x.example/pm' is not an http or https URL"),
        ("/api/v1/incidents", {**ok, "postmortem_url": "javascript:alert(1)"}, 422, "postmortem_url:"),
        ("/api/v1/incidents", {**ok, "windows": [424242]}, 422, "windows[0]: no verified outage window with id 424242"),
        ("/api/v1/incidents", {**ok, "maintenance": [99]}, 422, "maintenance[0]: no maintenance announcement with id 99"),
        ("/api/v1/incidents", {**ok, "title": "  "}, 422, "title: String should have at least 1 character"),
        # times are the collector's: a caller's is refused, not taken
        ("/api/v1/incidents", {**ok, "created_at": "2020-01-01T00:00:00Z"}, 422, "created_at: unknown field"),
        (f"/api/v1/incidents/{iid}/updates", {"status": "monitoring", "message": "m",
                                              "recorded_at": "2020-01-01T00:00:00Z"}, 422, "recorded_at: unknown field"),
        (f"/api/v1/incidents/{iid}/updates", {"status": "done", "message": "m"}, 422, "status: Input should be"),
        (f"/api/v1/incidents/{iid}/updates", {"status": "monitoring"}, 422, "message: Field required"),
        (f"/api/v1/incidents/{iid}/links", {"windows": [7]}, 422, "windows[0]: no verified outage window with id 7"),
        (f"/api/v1/incidents/{iid}/links", {}, 422, "windows: give at least one"),
        (f"/api/v1/incidents/{iid}/postmortem", {"postmortem_url": "http://"}, 422, "postmortem_url:"),
        ("/api/v1/incidents/999/updates", {"status": "monitoring", "message": "m"}, 404, "id: no incident with id 999"),
        ("/api/v1/incidents/abc/updates", {"status": "monitoring", "message": "m"}, 404, "id: no incident with id 'abc'"),
    ]
    for path, body, status, message in cases:
        resp = await http.post(path, headers=ADMIN, json=body)
        assert resp.status == status, (path, body, await resp.text())
        assert message in (await resp.json())["error"], (path, body)
    assert (await http.get("/api/v1/incidents", params={"state": "closed"})).status == 400
    assert (await http.get("/api/v1/incidents/999")).status == 404
    listed = (await (await http.get("/api/v1/incidents")).json())["incidents"]
    assert [(i["id"], len(i["updates"]), i["windows"], i["postmortem_url"]) for i in listed] == \
        [(iid, 1, [], None)] + [(e["id"], 4, e["windows"], e["postmortem_url"]) for e in earlier]
    assert listed[0]["created_at"] == opened["created_at"]


def test_cli_opens_updates_lists_and_shows(tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "collector.yml"
    config.write_text(yaml.safe_dump(config_data(database_url)))
    cfg = ["--config", str(config)]
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli_main, list(args), catch_exceptions=False)

    announced = run("maintenance", "announce", *cfg, "--policy", "sla", "--kind", "emergency",
                    "--start", "2026-10-04T10:00:00Z", "--end", "2026-10-04T10:30:00Z", "--format", "json")
    assert announced.exit_code == 0, announced.output
    maintenance_id = json.loads(announced.stdout)["id"]
    before = datetime.now(UTC)
    done = run("incidents", "open", *cfg, "--title", "Storage latency", "--impact", "critical", "--policy", "sla",
               "--message", "Disks saturated", "--author", "bob", "--maintenance", str(maintenance_id), "--format", "json")
    assert done.exit_code == 0, done.output
    opened = json.loads(done.stdout)
    assert (opened["created_by"], opened["updates"][0]["recorded_by"], opened["updates"][0]["author"]) == ("cli", "cli", "bob")
    assert before <= at(opened["created_at"]) <= datetime.now(UTC)
    assert [m["id"] for m in opened["maintenance"]] == [maintenance_id]
    iid = str(opened["id"])

    done = run("incidents", "update", iid, *cfg, "--status", "resolved", "--message", "Rebalanced")
    assert done.exit_code == 0, done.output
    assert "resolved" in done.stdout.splitlines()[0] and "resolved (cli): Rebalanced" in done.stdout
    done = run("incidents", "link", iid, *cfg, "--postmortem-url", "https://pm.example/storage")
    assert done.exit_code == 0 and "post-mortem: https://pm.example/storage" in done.stdout
    listed = json.loads(run("incidents", "list", *cfg, "--format", "json").stdout)
    assert [(i["id"], i["status"], i["postmortem_url"]) for i in listed] == [
        (opened["id"], "resolved", "https://pm.example/storage")]
    assert run("incidents", "list", *cfg, "--state", "open").stdout.strip() == "no incidents open"
    shown = json.loads(run("incidents", "show", iid, *cfg, "--format", "json").stdout)
    assert [u["status"] for u in shown["updates"]] == ["investigating", "resolved"]

    refused = [
        (["incidents", "open", *cfg, "--title", "t", "--impact", "minor", "--policy", "nope", "--message", "m"],
         "error: --policy: unknown policy 'nope'"),
        (["incidents", "open", *cfg, "--title", "t", "--impact", "minor", "--policy", "sla", "--message", "m",
          "--window", "31337"], "error: --window: no verified outage window with id 31337"),
        (["incidents", "open", *cfg, "--title", "t", "--impact", "minor", "--policy", "sla", "--message", "m",
          "--postmortem-url", "file:///etc/passwd"], "error: --postmortem-url: 'file:///etc/passwd' is not an http"),
        (["incidents", "update", iid, *cfg, "--status", "monitoring", "--message", "again"],
         f"error: ID: incident {iid} was resolved at"),
        (["incidents", "show", "999", *cfg], "error: ID: no incident with id 999"),
        (["incidents", "update", iid, *cfg, "--status", "fixed", "--message", "m"], "'--status'"),
    ]
    for args, message in refused:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    # nothing half-written by the refusals
    assert [i["id"] for i in json.loads(run("incidents", "list", *cfg, "--format", "json").stdout)] == [opened["id"]]


async def _sql(url: str, *statements: str):
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    finally:
        await engine.dispose()
    return tables, diff


def _mine(diff: list) -> list:
    return [d for d in diff if any(t in repr(d) for t in INCIDENT_TABLES)]


async def test_migration_creates_the_tables_and_refuses_to_drop_recorded_incidents(database_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, database_url, "0010")
    tables, diff = await _sql(database_url)
    assert INCIDENT_TABLES <= tables and _mine(diff) == []
    stamp = "2026-11-01 10:00:00"
    await _sql(database_url,
               "INSERT INTO incidents (id, title, impact, policies, created_at, created_by, author, updated_at) "
               f"VALUES (1, 't', 'minor', '[\"sla\"]', '{stamp}', 'api', '', '{stamp}')")
    with pytest.raises(RuntimeError, match="cannot downgrade below 0010: 1 incident"):
        await asyncio.to_thread(migrate.downgrade, database_url, "0009")
    await _sql(database_url, "DELETE FROM incidents")
    await asyncio.to_thread(migrate.downgrade, database_url, "0009")
    tables, _ = await _sql(database_url)
    assert not INCIDENT_TABLES & tables and "maintenance" in tables
    await asyncio.to_thread(migrate.upgrade, database_url, "0010")
    tables, diff = await _sql(database_url)
    assert INCIDENT_TABLES <= tables and _mine(diff) == []


@pytest.mark.parametrize("impact, since_update, overdue", [
    ("major", 4 * H + M, True), ("critical", 4 * H + M, True), ("major", 4 * H, False), ("minor", 10 * H, False)])
def test_an_urgent_open_incident_without_an_update_for_four_hours_is_shown_overdue(impact, since_update, overdue):
    # Numezis SaaS SLA §6: "updates every 2-4 hours for P1/P2"
    from collector.db import Incident, IncidentUpdate
    from collector.incidents import IncidentRecord
    from collector.status.incidents import view_of

    opened = datetime(2026, 11, 3, 8, tzinfo=UTC)
    incident = Incident(id=7, title="API down", impact=impact, policies=["sla"], created_at=opened, created_by="api",
                        author="", updated_at=opened + H, resolved_at=None, postmortem_url=None)
    updates = [IncidentUpdate(id=1, incident_id=7, status="investigating", message="a", recorded_at=opened,
                              recorded_by="api", author=""),
               IncidentUpdate(id=2, incident_id=7, status="identified", message="b", recorded_at=opened + H,
                              recorded_by="cli", author="eve")]
    view = view_of(IncidentRecord(incident, updates, []), opened + H + since_update, {})
    assert view.update_overdue is overdue
    assert (view.latest.message, view.latest.by, view.status_text) == ("b", "cli, eve", "Identified")
    html = ENV.get_template("_incidents_open.html").render(open_incidents=[view])
    assert '<a href="/incidents#incident-7">API down</a>' in html and "2026-11-03 09:00 UTC</time>: b" in html
