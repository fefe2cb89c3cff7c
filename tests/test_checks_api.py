"""Checks through the admin API (issue 4, "Central check distribution"): created, replaced and
removed on a running collector, validated like the config file, kept across restarts, on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from collector.app import create_app
from collector.config import parse_config
from collector.service import CollectorState
from test_collector_api import TOKENS, auth, post, result

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
WEB = {"name": "web", "type": "http", "interval": 60, "url": "http://127.0.0.1:1/", "timeout": "5s"}


def config(database_url: str, checks=None, **extra) -> dict:
    return {
        "database_url": database_url,
        "admin_token": "admin-token-0123456789",
        "evaluation": {"interval": "1h", "grace": "5s"},
        "agents": [{"id": a, "token": t} for a, t in TOKENS.items()],
        "checks": checks if checks is not None else [WEB],
        "policies": [{"name": "contract", "preset": "nexcess", "components": ["web"]}],
        **extra,
    }


async def start(aiohttp_client, cfg: dict):
    state = CollectorState.create(parse_config(cfg, "test"))
    client = await aiohttp_client(create_app(state))
    client.state = state
    return client


async def assigned(client, agent: str = "a1") -> tuple[str, dict]:
    resp = await client.get("/api/v1/assignments", headers=auth(agent))
    assert resp.status == 200
    return resp.headers["ETag"], {c["name"]: c for c in (await resp.json())["checks"]}


async def test_a_check_is_created_replaced_and_removed_and_agents_see_it(database_url, aiohttp_client) -> None:
    client = await start(aiohttp_client, config(database_url))
    etag0, checks = await assigned(client)
    assert set(checks) == {"web"}

    api = {"type": "http", "interval": "30s", "url": "http://127.0.0.1:2/health", "timeout": "2s",
           "agents": ["a1", "a2"], "outage": {"quorum": "majority", "min_duration": "1m"}}
    resp = await client.put("/api/v1/checks/api-web", json=api, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["name"], body["interval"], body["source"]) == ("api-web", 30.0, "api")

    etag1, checks = await assigned(client, "a1")
    assert etag1 != etag0 and checks["api-web"]["url"] == "http://127.0.0.1:2/health"
    _, for_a3 = await assigned(client, "a3")
    assert "api-web" not in for_a3  # assigned to a1 and a2 only
    # evaluated at once with its own rule, and its results are accepted
    assert "api-web" in {p["name"] for p in (await (await client.get("/api/v1/policies")).json())["policies"]}
    slot = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    ok = await post(client, "a1", [result(slot, True, check="api-web")])
    assert ok.status == 200, await ok.text()

    # replaced: a changed interval and URL; same ETag for an unchanged set, new for a changed one
    resp = await client.put("/api/v1/checks/api-web", json={**api, "url": "http://127.0.0.1:2/v2"}, headers=ADMIN)
    assert resp.status == 200
    etag2, checks = await assigned(client)
    assert etag2 != etag1 and checks["api-web"]["url"] == "http://127.0.0.1:2/v2"
    again = await client.get("/api/v1/assignments", headers={**auth("a1"), "If-None-Match": etag2})
    assert again.status == 304

    # removed: no longer assigned; late results of slots before the removal are still evidence
    resp = await client.delete("/api/v1/checks/api-web", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    removed_at = datetime.fromisoformat((await resp.json())["removed_at"].replace("Z", "+00:00"))
    _, checks = await assigned(client)
    assert "api-web" not in checks
    late = await post(client, "a2", [result(slot, False, check="api-web")])
    assert late.status == 200, await late.text()
    after = await post(client, "a2", [result(removed_at + timedelta(seconds=30), True, check="api-web")])
    assert after.status == 422
    assert "results[0].check: check 'api-web' was removed at" in (await after.json())["error"]
    listing = await (await client.get("/api/v1/checks")).json()
    assert [c["name"] for c in listing["checks"]] == ["web"]
    assert [c["name"] for c in listing["removed"]] == ["api-web"]
    assert (await client.get("/api/v1/checks/api-web")).status == 404

    # created again after its removal: 201
    assert (await client.put("/api/v1/checks/api-web", json=api, headers=ADMIN)).status == 201


@pytest.mark.parametrize("name, body, status, message", [
    ("x", {"type": "http", "interval": "1m"}, 422, "url"),
    ("x", {"type": "http", "interval": "-1s", "url": "http://h/"}, 422, "interval"),
    ("x", {"type": "smtp", "interval": "1m"}, 422, "type"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "agents": ["nobody"]}, 422,
     "agents[0]: unknown agent 'nobody'"),
    ("x", {"name": "y", "type": "http", "interval": "1m", "url": "http://h/"}, 422, "name: 'y' differs"),
    ("x", {"type": "icmp", "interval": "2s", "host": "127.0.0.1", "count": 3}, 422, "count"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "outage": {"quorum": "k_of_n"}}, 422, "k"),
    ("x", [1, 2], 422, "body: expected a JSON object"),
    ("bad name!", {"type": "http", "interval": "1m", "url": "http://h/"}, 422, "name"),
    # the contract policy (nexcess: 1-minute polls) cannot be fed by a 10-minute check
    ("web", {**WEB, "interval": "10m"}, 409, "policy 'contract'"),
    # checks that could never succeed; the messages show no credential
    ("x", {"type": "http", "interval": "1m", "url": "https://ops:hunter22@h/", "headers": {"Authorization": "Bearer t0ken"}},
     422, "headers.Authorization: conflicts with the user info in url 'https://ops:<redacted>@h/': give the credentials "
          "either in the url or in the Authorization header, not both"),
    ("x", {"type": "http", "interval": "1m", "url": "ftp://ops:hunter22@h/"}, 422,
     "url: invalid url 'ftp://ops:<redacted>@h/': scheme must be http or https"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "headers": {"X-Api-Key": 12345678}}, 422,
     "headers.X-Api-Key: input should be a valid string"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "headers": {"X-Trace": "a\r\nX-Evil: 1"}}, 422,
     "headers.X-Trace: header value must not contain CR, LF or NUL"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "headers": {"Bad Name": "v"}}, 422,
     "headers.Bad Name: invalid header name 'Bad Name'"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "method": "HEAD", "body_match": "ok"}, 422,
     "body_match: a HEAD response has no body, so it can never match"),
    # a read answer (secrets shown redacted) sent back as it was
    ("x", {"type": "http", "interval": "1m", "url": "https://ops:<redacted>@h/"}, 422,
     "url: holds <redacted>, the placeholder reads of a check show in place of a credential: give the real value"),
    ("x", {"type": "http", "interval": "1m", "url": "http://h/", "headers": {"X-Api-Key": "<redacted>"}}, 422,
     "headers.X-Api-Key: holds <redacted>"),
])
async def test_a_bad_check_is_refused_with_the_field_named_and_nothing_changes(
        database_url, aiohttp_client, name, body, status, message) -> None:
    client = await start(aiohttp_client, config(database_url))
    etag, before = await assigned(client)
    resp = await client.put(f"/api/v1/checks/{name}", json=body, headers=ADMIN)
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]
    assert "hunter22" not in await resp.text() and "12345678" not in await resp.text()
    assert await assigned(client) == (etag, before)


async def test_check_changes_need_the_admin_token_and_contract_components_stay(database_url, aiohttp_client) -> None:
    client = await start(aiohttp_client, config(database_url))
    for headers in ({}, auth("a1"), {"Authorization": "Bearer wrong"}):
        assert (await client.put("/api/v1/checks/x", json=WEB, headers=headers)).status == 401
        assert (await client.delete("/api/v1/checks/web", headers=headers)).status == 401
    resp = await client.delete("/api/v1/checks/web", headers=ADMIN)
    assert resp.status == 409
    assert "component of policy contract" in (await resp.json())["error"]
    assert (await client.delete("/api/v1/checks/nothing", headers=ADMIN)).status == 404


async def test_restarts_keep_api_changes_until_the_config_file_changes(database_url, aiohttp_client) -> None:
    ping = {"name": "ping", "type": "icmp", "interval": 60, "host": "127.0.0.1", "timeout": "1s"}
    first = await start(aiohttp_client, config(database_url, checks=[WEB, ping]))
    assert (await first.put("/api/v1/checks/extra", json={**WEB, "name": "extra"}, headers=ADMIN)).status == 201
    assert (await first.put("/api/v1/checks/web", json={**WEB, "url": "http://127.0.0.1:3/api"}, headers=ADMIN)).status == 200
    assert (await first.delete("/api/v1/checks/ping", headers=ADMIN)).status == 200
    await first.close()

    # same file: the API's creation, change and removal stand
    second = await start(aiohttp_client, config(database_url, checks=[WEB, ping]))
    _, checks = await assigned(second)
    assert set(checks) == {"web", "extra"}
    assert checks["web"]["url"] == "http://127.0.0.1:3/api"
    await second.close()

    # the file changed: its new web and ping win, a check it no longer lists... was never in it
    third = await start(aiohttp_client, config(database_url, checks=[{**WEB, "url": "http://127.0.0.1:4/"},
                                                                    {**ping, "timeout": "2s"}]))
    _, checks = await assigned(third)
    assert set(checks) == {"web", "ping", "extra"}
    assert checks["web"]["url"] == "http://127.0.0.1:4/"
    listing = await (await third.get("/api/v1/checks")).json()
    assert {c["name"]: c["source"] for c in listing["checks"]} == {"web": "config", "ping": "config", "extra": "api"}
    await third.close()

    # a provisioned check taken out of the file is removed; one made through the API is not
    fourth = await start(aiohttp_client, config(database_url, checks=[WEB]))
    _, checks = await assigned(fourth)
    assert set(checks) == {"web", "extra"}


async def test_another_replica_takes_up_a_change_made_through_the_first(database_url, aiohttp_client) -> None:
    one = await start(aiohttp_client, config(database_url))
    two = await start(aiohttp_client, config(database_url))
    assert (await one.put("/api/v1/checks/extra", json={**WEB, "name": "extra"}, headers=ADMIN)).status == 201
    await two.state.reload_checks()  # what its evaluation job does every tick
    _, checks = await assigned(two)
    assert "extra" in checks
    assert not await two.state.reload_checks()  # nothing changed since: nothing rebuilt


async def test_a_contract_policy_is_created_replaced_and_removed(database_url, aiohttp_client) -> None:
    client = await start(aiohttp_client, config(database_url))
    assert (await client.put("/api/v1/checks/api-web", json={**WEB, "name": "api-web"}, headers=ADMIN)).status == 201
    body = {"preset": "nexcess", "components": ["api-web"]}
    resp = await client.put("/api/v1/policies/sla2", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["kind"], created["source"], created["preset"], created["components"]) == (
        "contract", "api", "nexcess", ["api-web"])
    listed = {p["name"]: p for p in (await (await client.get("/api/v1/policies")).json())["policies"]}
    assert listed["sla2"]["kind"] == "contract" and listed["contract"]["source"] == "config"
    assert listed["web"]["kind"] == "check"
    report = await client.get("/api/v1/reports/sla2", params={"period": "2026-10"})
    assert report.status == 200, await report.text()
    assert (await client.put("/api/v1/policies/sla2", json=body, headers=ADMIN)).status == 200

    # its component cannot go while it uses it
    resp = await client.delete("/api/v1/checks/api-web", headers=ADMIN)
    assert resp.status == 409 and "component of policy sla2" in (await resp.json())["error"]

    resp = await client.delete("/api/v1/policies/sla2", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert "sla2" not in {p["name"] for p in (await (await client.get("/api/v1/policies")).json())["policies"]}
    assert (await client.get("/api/v1/reports/sla2")).status == 404
    assert (await client.delete("/api/v1/policies/sla2", headers=ADMIN)).status == 404
    assert (await client.delete("/api/v1/checks/api-web", headers=ADMIN)).status == 200


@pytest.mark.parametrize("name, body, status, message", [
    ("p", {"preset": "no-such-contract"}, 422, "preset: unknown preset 'no-such-contract'"),
    ("p", {"preset": "/etc/passwd"}, 422, "preset: unknown preset"),  # never a file of the host
    ("p", {"preset": "nexcess", "components": ["nothing"]}, 422, "components: nothing not among"),
    ("p", {"preset": "nexcess", "components": ["web"], "target_percent": 120}, 422, "target_percent"),
    ("p", {"preset": "nexcess", "components": ["web"], "colour": "red"}, 422, "colour: unknown field"),
    ("web", {"preset": "nexcess", "components": ["web"]}, 422, "already the name of a check"),
    ("p", "nexcess", 422, "body: expected a JSON object"),
])
async def test_a_bad_policy_is_refused_with_the_field_named(database_url, aiohttp_client, name, body, status, message) -> None:
    client = await start(aiohttp_client, config(database_url))
    before = (await (await client.get("/api/v1/policies")).json())["policies"]
    resp = await client.put(f"/api/v1/policies/{name}", json=body, headers=ADMIN)
    assert resp.status == status, await resp.text()
    assert message in (await resp.json())["error"]
    assert (await (await client.get("/api/v1/policies")).json())["policies"] == before


async def test_policy_changes_need_the_admin_token_and_check_policies_stay(database_url, aiohttp_client) -> None:
    client = await start(aiohttp_client, config(database_url))
    for headers in ({}, auth("a1")):
        assert (await client.put("/api/v1/policies/p", json={"preset": "nexcess", "components": ["web"]},
                                 headers=headers)).status == 401
        assert (await client.delete("/api/v1/policies/contract", headers=headers)).status == 401
    resp = await client.delete("/api/v1/policies/web", headers=ADMIN)
    assert resp.status == 409 and "remove the check instead" in (await resp.json())["error"]
    # a check cannot take a policy's name either
    resp = await client.put("/api/v1/checks/contract", json={**WEB, "name": "contract"}, headers=ADMIN)
    assert resp.status == 422 and "already the name of a policy" in (await resp.json())["error"]
    # the config's contract can be removed through the API, and stays removed across a restart
    assert (await client.delete("/api/v1/policies/contract", headers=ADMIN)).status == 200
    await client.close()
    again = await start(aiohttp_client, config(database_url))
    assert "contract" not in {p["name"] for p in (await (await again.get("/api/v1/policies")).json())["policies"]}
