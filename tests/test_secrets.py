"""Secrets stay private: a check's credentials reach only the agents it is assigned to.

The redaction rules (protocol/redact.py) as tables, then a running collector (SQLite and
PostgreSQL) holding checks with credentials, from the config file and through the admin API:
every read, public or admin, /metrics, the status page, webhooks and the collector's log show
them redacted; GET /api/v1/assignments gives them in full to the assigned agent only.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from test_collector_api import TOKENS, auth, base_slot, make_state, result
from test_e2e_fleet import free_port
from test_notifications import SECRET, Receiver

from collector import notify
from collector.app import create_app
from collector.config import ConfigError, parse_config
from collector.db import Notification
from protocol.redact import (
    REDACTED,
    is_secret_header,
    redact_check,
    redact_text,
    redact_url,
    secret_values,
)

# Every credential the checks below carry; none may appear anywhere but in assignments.
SECRETS = ("hunter22-url-pass", "Bearer tok-auth-value", "tok-auth-value", "key-x-api-value", "q-token-value",
           "sess-cookie-value", "body-password-value", "step-bearer-value")
ADMIN_TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

CONFIG_CHECK = {
    "name": "login", "type": "http", "interval": 60, "timeout": "5s",
    "url": "https://ops:hunter22-url-pass@127.0.0.1:1/login?token=q-token-value&page=2",
    "headers": {"X-Api-Key": "key-x-api-value", "Accept": "application/json", "Cookie": "sid=sess-cookie-value"},
    "agents": ["a1"],
}
API_CHECK = {
    "type": "http", "interval": "1m", "url": "https://127.0.0.1:1/api",
    "headers": {"Authorization": "Bearer tok-auth-value", "X-Request-Source": "uptime"},
    "agents": ["a1", "a2"],
}


# --- the rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@host/", f"https://user:{REDACTED}@host/"),
    ("https://user:p%40ss@host:8443/x?y=1", f"https://user:{REDACTED}@host:8443/x?y=1"),
    ("https://ghp_0123456789@host/", f"https://{REDACTED}@host/"),  # a user name alone is the credential
    ("https://sk_live_0123:@host/", f"https://{REDACTED}@host/"),  # so is one with an empty password
    ("https://host/p?token=abc&page=2", f"https://host/p?token={REDACTED}&page=2"),
    ("https://host/p?API_KEY=abc&Signature=s&sig=1&key=k",
     f"https://host/p?API_KEY={REDACTED}&Signature={REDACTED}&sig={REDACTED}&key={REDACTED}"),
    ("https://host/p?X-Amz-Signature=s&client_secret=c&access_token=t&password=p",
     f"https://host/p?X-Amz-Signature={REDACTED}&client_secret={REDACTED}&access_token={REDACTED}&password={REDACTED}"),
    ("https://host/p?monkey=1&design=2&keyword=3", "https://host/p?monkey=1&design=2&keyword=3"),
    ("https://host/plain", "https://host/plain"),
    ("http://[::1", "http://[::1"),  # does not parse: returned as it was
])
def test_urls_show_no_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # redacting twice changes nothing


@pytest.mark.parametrize("name", ["Authorization", "proxy-authorization", "Cookie", "Set-Cookie", "X-Api-Key",
                                  "Api-Key", "X-Auth-Token", "X-GitHub-Token", "Client-Secret", "X-Session-Id",
                                  "X-Password", "X-AUTHENTICATION", "Ocp-Apim-Subscription-Key"])
def test_secret_headers(name: str) -> None:
    assert is_secret_header(name)


@pytest.mark.parametrize("name", ["Accept", "User-Agent", "Content-Type", "X-Request-Id", "Host"])
def test_ordinary_headers(name: str) -> None:
    assert not is_secret_header(name)


def test_a_check_and_its_journey_steps_are_redacted_and_the_original_kept() -> None:
    spec = {"name": "j", "type": "http", "url": "https://u:pw-secret@h/", "body_match": "ok",
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "text/html"}, "body": "password=body-pw",
            "steps": [{"url": "https://h/next?token=step-tok", "json": {"password": "pw2"},
                       "headers": {"X-Api-Key": "step-key"}}]}
    original = json.loads(json.dumps(spec))
    assert redact_check(spec) == {
        "name": "j", "type": "http", "url": f"https://u:{REDACTED}@h/", "body_match": "ok",
        "headers": {"Authorization": REDACTED, "Accept": "text/html"}, "body": REDACTED,
        "steps": [{"url": f"https://h/next?token={REDACTED}", "json": REDACTED, "headers": {"X-Api-Key": REDACTED}}]}
    assert spec == original
    assert secret_values(spec) >= {"pw-secret", "Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "password=body-pw",
                                   "step-tok", "step-key"}


def test_free_text_shows_no_url_credentials_and_no_known_secret() -> None:
    text = ("Cannot connect to host https://u:pw-secret@h:443/x?sig=abcd ssl:default; "
            "server said 'bad key step-key-0001'")
    assert redact_text(text, {"step-key-0001"}) == (
        f"Cannot connect to host https://u:{REDACTED}@h:443/x?sig={REDACTED} ssl:default; "
        f"server said 'bad key {REDACTED}'")


def test_the_collector_config_refuses_a_check_that_can_never_succeed_naming_the_field() -> None:
    check = {**CONFIG_CHECK, "headers": {"authorization": "Bearer tok-auth-value"}}
    with pytest.raises(ConfigError) as err:
        parse_config({"agents": [{"id": "a1", "token": TOKENS["a1"]}], "checks": [check]}, "collector.yml")
    assert str(err.value) == (
        "collector.yml: checks.0.headers.authorization: conflicts with the user info in url "
        f"'https://ops:{REDACTED}@127.0.0.1:1/login?token={REDACTED}&page=2': give the credentials either in "
        "the url or in the Authorization header, not both")


# --- a running collector ----------------------------------------------------------------------

def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} shows {leaked}"


async def test_reads_show_redacted_checks_and_only_assigned_agents_get_them_in_full(
        database_url, aiohttp_client, caplog) -> None:
    # the collector's own loggers at DEBUG; aiosqlite (statements with their parameters) stays
    # at INFO, as `uptime-collector --log-level DEBUG` keeps it
    caplog.set_level(logging.INFO)
    for name in ("uptime", "collector", "protocol"):
        caplog.set_level(logging.DEBUG, logger=name)
    state = make_state(database_url, admin_token=ADMIN_TOKEN, checks=[CONFIG_CHECK])
    client = await aiohttp_client(create_app(state))

    resp = await client.put("/api/v1/checks/api", json=API_CHECK, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    put_answer = await resp.text()
    assert_no_secret(put_answer, "the PUT answer")
    assert json.loads(put_answer)["headers"] == {"Authorization": REDACTED, "X-Request-Source": "uptime"}
    resp = await client.put("/api/v1/checks/api", json=API_CHECK, headers=ADMIN)  # replaced
    assert resp.status == 200
    assert_no_secret(await resp.text(), "the PUT answer (replaced)")

    # every read, anonymous and admin
    for headers in ({}, ADMIN):
        listed = await client.get("/api/v1/checks", headers=headers)
        assert listed.status == 200
        text = await listed.text()
        assert_no_secret(text, f"GET /api/v1/checks {headers}")
        login = next(c for c in json.loads(text)["checks"] if c["name"] == "login")
        assert login["url"] == f"https://ops:{REDACTED}@127.0.0.1:1/login?token={REDACTED}&page=2"
        assert login["headers"] == {"X-Api-Key": REDACTED, "Accept": "application/json", "Cookie": REDACTED}
        for path in ("/api/v1/checks/login", "/api/v1/checks/api", "/api/v1/policies"):
            resp = await client.get(path, headers=headers)
            assert resp.status == 200
            assert_no_secret(await resp.text(), f"GET {path}")

    # the assigned agents get them in full; an agent the check is not assigned to, not at all
    resp = await client.get("/api/v1/assignments", headers=auth("a1"))
    checks = {c["name"]: c for c in (await resp.json())["checks"]}
    assert checks["login"]["url"] == CONFIG_CHECK["url"]
    assert checks["login"]["headers"] == CONFIG_CHECK["headers"]
    assert checks["api"]["headers"]["Authorization"] == "Bearer tok-auth-value"
    resp = await client.get("/api/v1/assignments", headers=auth("a2"))
    checks = {c["name"]: c for c in (await resp.json())["checks"]}
    assert "login" not in checks and checks["api"]["headers"]["Authorization"] == "Bearer tok-auth-value"
    resp = await client.get("/api/v1/assignments", headers=auth("a3"))
    assert (await resp.json())["checks"] == []  # neither check is assigned to a3

    # results make the per-check series exist; /metrics and the status page show no secret
    slot = base_slot()
    for agent, check in (("a1", "login"), ("a1", "api"), ("a2", "api")):
        resp = await client.post("/api/v1/results", headers=auth(agent),
                                 json={"agent": agent, "results": [result(slot, True, check=check)]})
        assert resp.status == 200, await resp.text()
    metrics = await (await client.get("/metrics")).text()
    assert 'check="login"' in metrics
    assert_no_secret(metrics, "/metrics")
    page = await client.get("/")
    assert page.status == 200
    assert_no_secret(await page.text(), "the status page")
    for policy in ("login", "api"):
        resp = await client.get(f"/policies/{policy}")
        assert resp.status in (200, 302)
        assert_no_secret(await resp.text(), f"/policies/{policy}")

    # a refused change names the field and shows no secret, in the answer and in the log
    bad = {**API_CHECK, "url": "https://ops:hunter22-url-pass@127.0.0.1:1/api"}
    resp = await client.put("/api/v1/checks/api", json=bad, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"].startswith("headers.Authorization: conflicts with the user info in url")
    assert_no_secret(await resp.text(), "the refusal")
    assert caplog.records, "nothing was logged at all"
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the collector's log")


async def test_webhook_payloads_show_no_credentials(database_url, aiohttp_client) -> None:
    """An outage of a check with credentials, and a payload carrying a URL with credentials in its
    text and a check definition: the outbox row and the delivered body hold neither."""
    port = free_port()
    state = make_state(database_url, public_url="http://status.example", checks=[
        {**CONFIG_CHECK, "agents": None, "outage": {"quorum": "all", "min_duration": "2m"}}],
        notifications=[{"name": "ops", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET}])
    client = await aiohttp_client(create_app(state))
    slots = [base_slot() + timedelta(minutes=i) for i in range(6)]
    for agent in TOKENS:
        resp = await client.post("/api/v1/results", headers=auth(agent), json={
            "agent": agent, "results": [result(s, i not in (1, 2, 3), check="login") for i, s in enumerate(slots)]})
        assert resp.status == 200, await resp.text()
    await state.evaluator.tick()
    async with state.sessionmaker() as session:
        await notify.enqueue(session, state.config.notifications, "maintenance.started", "login|test", {
            "policy": "login",
            "maintenance": {"kind": "normal", "note": "runbook: https://ops:hunter22-url-pass@wiki.example/db"},
            "check": {"url": CONFIG_CHECK["url"], "headers": CONFIG_CHECK["headers"]},
        })
        await session.commit()
        rows = (await session.scalars(select(Notification))).all()
    assert {r.event for r in rows} >= {"outage.verified", "outage.resolved", "maintenance.started"}
    assert_no_secret(json.dumps([r.payload for r in rows]), "the outbox")
    receiver = Receiver(port)
    await receiver.up()
    try:
        assert await state.deliverer.run_once(now=datetime.now(timezone.utc) + timedelta(minutes=1)) == len(rows)
    finally:
        await receiver.close()
    delivered = json.dumps([body for _, body in receiver.received])
    assert_no_secret(delivered, "the webhooks")
    maintenance = next(b for h, b in receiver.received if h["X-Uptime-Event"] == "maintenance.started")
    assert maintenance["maintenance"]["note"] == f"runbook: https://ops:{REDACTED}@wiki.example/db"
    assert maintenance["check"]["headers"] == {"X-Api-Key": REDACTED, "Accept": "application/json", "Cookie": REDACTED}


def test_a_tcp_checks_send_line_is_redacted_like_a_body():
    from protocol.redact import redact_check

    spec = {"name": "redis", "type": "tcp", "host": "10.0.0.5", "port": 6379, "send": "AUTH hunter2\r\n", "expect": "^\\+OK"}
    shown = redact_check(spec)
    assert shown["send"] == "<redacted>" and shown["expect"] == "^\\+OK" and "hunter2" not in repr(shown)
    assert spec["send"] == "AUTH hunter2\r\n"  # the agent's own copy is untouched
