"""Webhooks through the outbox, against a real local receiver that is down for a while."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

from aiohttp import web
from sqlalchemy import func, select

from collector.app import create_app
from collector.db import Notification
from test_collector_api import TOKENS, auth, base_slot, make_state, result
from test_e2e_fleet import free_port

SECRET = "webhook-secret-0123456789"


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict, dict]] = []
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app)
        self.site: web.TCPSite | None = None

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), json.loads(body)))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert request.headers["X-Uptime-Signature"] == expected
        return web.Response(status=204)

    async def up(self) -> None:
        if not self.runner.server:
            await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()

    async def close(self) -> None:
        await self.runner.cleanup()


async def test_outage_webhooks_are_signed_retried_and_sent_once(database_url, aiohttp_client) -> None:
    port = free_port()
    state = make_state(database_url, public_url="http://status.example",
                       notifications=[{"name": "ops", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                                       "events": ["outage.verified", "outage.resolved"]},
                                      {"name": "chat", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                                       "format": "slack", "events": ["outage.verified"]}])
    client = await aiohttp_client(create_app(state))
    s0 = base_slot()
    slots = [s0 + timedelta(minutes=i) for i in range(6)]
    for agent in TOKENS:
        resp = await client.post("/api/v1/results", headers=auth(agent),
                                 json={"agent": agent, "results": [result(s, i not in (1, 2, 3)) for i, s in enumerate(slots)]})
        assert resp.status == 200
    await state.evaluator.tick()
    await state.evaluator.tick()  # re-deriving the same window notifies nobody twice

    receiver = Receiver(port)
    # 1. the receiver is down: nothing delivered, the rows stay due later
    assert await state.deliverer.run_once() == 0
    async with state.sessionmaker() as session:
        rows = (await session.scalars(select(Notification).order_by(Notification.id))).all()
    assert [(r.sink, r.event) for r in rows] == [("ops", "outage.verified"), ("chat", "outage.verified"),
                                                 ("ops", "outage.resolved")]
    assert all(r.attempts == 1 and r.delivered_at is None and r.last_error for r in rows)
    # 2. it comes back: at the next due time everything is delivered, signed
    await receiver.up()
    try:
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert await state.deliverer.run_once(now=later) == 3
        assert await state.deliverer.run_once(now=later) == 0
        events = [(h["X-Uptime-Event"], body) for h, body in receiver.received]
        verified = next(b for e, b in events if e == "outage.verified" and "window" in b)
        assert verified["window"]["start"] == slots[1].isoformat().replace("+00:00", "Z")
        assert verified["evidence"]["agents_failed"] == sorted(TOKENS)
        assert verified["report_url"].startswith("http://status.example/policies/web/")
        resolved = next(b for e, b in events if e == "outage.resolved")
        assert resolved["window"]["end"] == slots[4].isoformat().replace("+00:00", "Z")
        assert resolved["window"]["minutes"] == 3
        slack = next(b for e, b in events if "text" in b)
        assert "Outage verified for *web*" in slack["text"]
    finally:
        await receiver.close()
    async with state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Notification).where(Notification.delivered_at.is_(None))) == 0
