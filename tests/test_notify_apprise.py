"""Apprise notifications from the outbox, against real receivers on loopback: an aiohttp server
standing in for a JSON webhook and for ntfy, and an SMTP server (aiosmtpd) for email."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner
from sqlalchemy import select

from collector.app import create_app
from collector.cli import main
from collector.config import ConfigError, parse_config
from collector.db import Notification
from collector.notify import human_duration, human_message, shown_url
from test_collector_api import TOKENS, auth, base_slot, make_state, result
from test_e2e_fleet import free_port

PASSWORD = "hunter2-basic-auth-pw"
NTFY_TOKEN = "tk_ntfy0123456789secret"
SMTP_PASSWORD = "smtp-pass-0123456789"


class Receiver:
    """Records every request; answers 200 (as ntfy and JSON webhook receivers do)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, dict, dict]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.any)
        self.runner = web.AppRunner(app)

    async def any(self, request: web.Request) -> web.Response:
        self.received.append((request.path, dict(request.headers), json.loads(await request.read() or b"{}")))
        return web.json_response({})

    async def up(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def close(self) -> None:
        await self.runner.cleanup()


class ThreadedReceiver(Receiver):
    """The same receiver on its own event loop in a thread, for the CLI (which runs its own loop)."""

    def __enter__(self) -> "ThreadedReceiver":
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.up(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def test_apprise_rows_are_retried_then_delivered_as_text_for_people(database_url, aiohttp_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    urls = [f"json://ops:{PASSWORD}@127.0.0.1:{port}/hook", f"ntfy://{NTFY_TOKEN}@127.0.0.1:{port}/uptime-alerts"]
    state = make_state(database_url, public_url="https://status.example",
                       notifications=[{"name": "people", "kind": "apprise", "urls": urls,
                                       "events": ["outage.verified", "outage.resolved"]}])
    client = await aiohttp_client(create_app(state))
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(6)]
    for agent in TOKENS:
        resp = await client.post("/api/v1/results", headers=auth(agent),
                                 json={"agent": agent, "results": [result(s, i not in (1, 2, 3)) for i, s in enumerate(slots)]})
        assert resp.status == 200
    await state.evaluator.tick()

    # 1. both receivers are down: nothing delivered, each row keeps why, without a secret in it
    assert await state.deliverer.run_once() == 0
    async with state.sessionmaker() as session:
        rows = (await session.scalars(select(Notification).order_by(Notification.id))).all()
    assert [r.event for r in rows] == ["outage.verified", "outage.resolved"]
    assert all(r.attempts == 1 and r.delivered_at is None and r.last_error for r in rows)
    assert "127.0.0.1" in rows[0].last_error
    # 2. they come back: at the next due time both rows reach both URLs
    receiver = Receiver(port)
    await receiver.up()
    try:
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert await state.deliverer.run_once(now=later) == 2
        assert await state.deliverer.run_once(now=later) == 0
    finally:
        await receiver.close()
    by_path = {}
    for path, headers, body in receiver.received:
        by_path.setdefault(path, []).append((headers, body))
    hook, ntfy = by_path["/hook"], by_path["/"]
    assert len(hook) == len(ntfy) == 2
    assert all(h["Authorization"] == f"Bearer {NTFY_TOKEN}" and b["topic"] == "uptime-alerts" for h, b in ntfy)
    resolved = next(b for _, b in hook if b["title"].startswith("Outage resolved"))
    start = f"{slots[1]:%Y-%m-%d %H:%M}"
    assert resolved["title"] == "Outage resolved: web (3 min)"
    assert f"was down {start} to {slots[4]:%H:%M} UTC (3 min)." in resolved["message"]
    assert f"report: https://status.example/policies/web/{slots[1]:%Y-%m}" in resolved["message"]
    assert f"API: https://status.example/api/v1/reports/web?period={slots[1]:%Y-%m}" in resolved["message"]
    verified = next(b for _, b in ntfy if b["title"].startswith("Outage verified"))
    assert f"down since {start} UTC" in verified["message"]
    assert "Failed at: a1, a2, a3" in verified["message"]
    # 3. no password or token in the stored errors or in any log line, Apprise's own included
    for secret in (PASSWORD, NTFY_TOKEN):
        assert secret not in caplog.text
        assert all(secret not in (r.last_error or "") for r in rows)
    assert "failed (attempt 1)" in caplog.text


def test_durations_and_times_are_written_for_people() -> None:
    assert [human_duration(m) for m in (0.8333333, 6, 72, 60, 1500, None)] == \
        ["50 s", "6 min", "1 h 12 min", "1 h", "1 d 1 h", "ongoing"]
    title, body = human_message({
        "event": "budget.threshold", "policy": "nexgen", "period": "2026-09", "budget_used_percent": 80.0,
        "downtime_minutes": 34.5, "allowed_downtime_minutes": 43.2, "availability_percent": 99.92,
        "report_url": "/policies/nexgen/2026-09"})
    assert title == "Downtime budget: nexgen at 80.0 %"
    assert "34 min of 43 min allowed" in body
    assert "API: /api/v1/reports/nexgen?period=2026-09" in body
    title, body = human_message({"event": "maintenance.started", "policy": "web",
                                 "maintenance": {"kind": "scheduled", "start": "2026-09-14T22:00:00Z",
                                                 "end": "2026-09-15T02:30:00Z"}})
    assert "2026-09-14 22:00 to 2026-09-15 02:30 UTC (4 h 30 min)" in body


def _config_file(tmp_path, notifications, **extra) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({"database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite'}",
                                    "notifications": notifications, **extra}))
    return str(path)


@pytest.fixture
def smtp_server():
    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], str]] = []
            self.logins: list[tuple[bytes, bytes]] = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    inbox = Inbox()

    def authenticator(server, session, envelope, mechanism, auth_data):
        inbox.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == SMTP_PASSWORD.encode())

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    inbox.port = port
    yield inbox
    controller.stop()


def test_notify_test_sends_an_email_now(tmp_path, smtp_server) -> None:
    url = (f"mailto://127.0.0.1:{smtp_server.port}?from=monitor@example.com&to=ops@example.com"
           f"&mode=insecure&user=monitor&pass={SMTP_PASSWORD}")
    config = _config_file(tmp_path, [{"name": "mail", "kind": "apprise", "urls": [url]}],
                          public_url="https://status.example")
    out = CliRunner().invoke(main, ["notify", "test", "mail", "--config", config])
    assert out.exit_code == 0, out.output
    assert "delivered a test message through mail" in out.output
    assert SMTP_PASSWORD not in out.output
    assert smtp_server.logins == [(b"monitor", SMTP_PASSWORD.encode())]
    [(sender, rcpt, content)] = smtp_server.messages
    assert (sender, rcpt) == ("monitor@example.com", ["ops@example.com"])
    assert "Subject: Test notification from uptime-collector (mail)" in content
    assert "status page: https://status.example/" in content


def test_notify_test_reports_a_failed_delivery_without_its_secret(tmp_path) -> None:
    port = free_port()  # nobody listens there
    config = _config_file(tmp_path, [{"name": "pager", "kind": "apprise",
                                      "urls": [f"ntfy://{NTFY_TOKEN}@127.0.0.1:{port}/pages"]}])
    out = CliRunner().invoke(main, ["notify", "test", "pager", "--config", config])
    assert out.exit_code == 2
    assert "error: notifications.pager: not delivered: ntfy://" in out.output
    assert "127.0.0.1" in out.output
    assert NTFY_TOKEN not in out.output
    assert "Traceback" not in out.output


def test_notify_test_through_json_and_the_signed_webhook(tmp_path) -> None:
    port = free_port()
    config = _config_file(tmp_path, [
        {"name": "hook", "url": f"http://127.0.0.1:{port}/signed", "secret": "webhook-secret-0123456789"},
        {"name": "json", "kind": "apprise", "urls": [f"json://127.0.0.1:{port}/plain?+X-Api-Key=key-{PASSWORD}"]},
    ])
    with ThreadedReceiver(port) as receiver:
        for name in ("hook", "json"):
            out = CliRunner().invoke(main, ["notify", "test", name, "--config", config])
            assert out.exit_code == 0, out.output
            assert PASSWORD not in out.output
    (path1, headers1, body1), (path2, headers2, body2) = receiver.received
    assert path1 == "/signed" and headers1["X-Uptime-Event"] == "test" and body1["sink"] == "hook"
    assert headers1["X-Uptime-Signature"].startswith("sha256=")
    assert path2 == "/plain" and headers2["X-Api-Key"] == f"key-{PASSWORD}"
    assert body2["title"] == "Test notification from uptime-collector (json)"


def test_notify_test_of_an_unknown_name_lists_the_configured_ones(tmp_path) -> None:
    config = _config_file(tmp_path, [{"name": "mail", "kind": "apprise", "urls": ["json://127.0.0.1:1/x"]},
                                     {"name": "ops", "url": "http://127.0.0.1:1/", "secret": "s" * 16}])
    out = CliRunner().invoke(main, ["notify", "test", "pager", "--config", config])
    assert out.exit_code == 2
    assert out.output.strip() == f"error: NAME: no notifier 'pager' in {config} (notifications: mail, ops)"


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "kind": "apprise"}, "notifications.0: urls: kind apprise needs at least one Apprise URL"),
    ({"name": "x", "kind": "apprise", "urls": ["json://127.0.0.1/", f"bogus://{PASSWORD}@host/"]},
     "notifications.0: urls.1: Apprise cannot use this bogus:// URL"),
    ({"name": "x", "kind": "apprise", "urls": ["no scheme"]}, "notifications.0: urls.0: not an Apprise URL"),
    ({"name": "x", "kind": "apprise", "urls": ["json://127.0.0.1/"], "secret": PASSWORD},
     "notifications.0: secret: only for kind webhook"),
    ({"name": "x", "url": "https://hooks.example/"}, "notifications.0: secret: required for kind webhook"),
    ({"name": "x", "url": "https://hooks.example/", "secret": "s" * 16, "urls": ["json://h/"]},
     "notifications.0: urls: only for kind apprise"),
    ({"name": "x", "kind": "email", "urls": ["json://h/"]}, "notifications.0.kind: Input should be 'webhook' or 'apprise'"),
])
def test_bad_notifier_entries_name_their_key(entry, message) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"notifications": [entry]}, "test")
    assert str(err.value).startswith(f"test: {message}")
    assert PASSWORD not in str(err.value)


def test_shown_urls_hide_tokens_apprise_itself_would_show() -> None:
    shown = shown_url(f"json://127.0.0.1:9/hook?+X-Api-Key={PASSWORD}")
    assert PASSWORD not in shown and shown == "json://127.0.0.1:9/hook"
    shown = shown_url("pagerduty://integration0123456@apikey0123456789")
    assert "integration0123456" not in shown and "apikey0123456789" not in shown


def test_apprise_log_lines_never_show_a_configured_token(caplog) -> None:
    from collector.config import NotificationSink
    from collector.notify import Deliverer

    sink = NotificationSink(name="pager", kind="apprise", urls=[f"ntfy://{NTFY_TOKEN}@127.0.0.1:1/pages"])
    Deliverer(None, [sink])  # as the collector starts: the filter knows the token from then on
    caplog.set_level(logging.DEBUG)
    # what Apprise or urllib3 may log at DEBUG: a request URL or header with the token in it
    logging.getLogger("apprise").debug("POST http://127.0.0.1:1/pages?auth=%s", NTFY_TOKEN)
    logging.getLogger("urllib3.connectionpool").debug("Authorization: Bearer %s", NTFY_TOKEN)
    assert caplog.text.count("<redacted>") == 2
    assert NTFY_TOKEN not in caplog.text


def test_an_unreadable_apprise_url_is_not_logged_while_the_config_is_checked(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError):
        parse_config({"notifications": [{"name": "x", "kind": "apprise", "urls": [f"bogus://{PASSWORD}@host/"]}]})
    assert PASSWORD not in caplog.text


async def test_a_retry_goes_only_to_the_urls_that_did_not_take_it(database_url, aiohttp_client) -> None:
    up_port, down_port = free_port(), free_port()
    state = make_state(database_url, notifications=[{
        "name": "people", "kind": "apprise", "events": ["outage.resolved"],
        "urls": [f"json://127.0.0.1:{up_port}/first", f"ntfy://{NTFY_TOKEN}@127.0.0.1:{down_port}/second"]}])
    client = await aiohttp_client(create_app(state))
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(6)]
    for agent in TOKENS:
        resp = await client.post("/api/v1/results", headers=auth(agent),
                                 json={"agent": agent, "results": [result(s, i not in (1, 2, 3)) for i, s in enumerate(slots)]})
        assert resp.status == 200
    await state.evaluator.tick()
    first, second = Receiver(up_port), Receiver(down_port)
    await first.up()
    try:
        assert await state.deliverer.run_once() == 0  # the second URL is down
        async with state.sessionmaker() as session:
            [row] = (await session.scalars(select(Notification))).all()
        assert row.delivered_at is None and f"127.0.0.1:{down_port}/second" in row.last_error
        assert NTFY_TOKEN not in row.last_error and NTFY_TOKEN not in json.dumps(row.payload)
        assert [p for p, _, _ in first.received] == ["/first"]
        await second.up()
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert await state.deliverer.run_once(now=later) == 1
    finally:
        await first.close()
        await second.close()
    assert [p for p, _, _ in first.received] == ["/first"]  # not paged twice
    assert [b["topic"] for _, _, b in second.received] == ["second"]
