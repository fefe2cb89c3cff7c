"""Webhook notifications through a durable outbox.

1. A fact (outage verified or resolved, maintenance started or ended, a budget threshold crossed)
   is written to the `notifications` table in the same transaction as the decision behind it,
   once per sink and fact (a unique dedupe key), so re-deriving the same window never notifies twice.
2. Any collector replica claims a due row with a conditional UPDATE (healthchecks' sendalerts
   pattern: whoever updates 0 rows knows another process took it), POSTs it, and marks it
   delivered on a 2xx; otherwise it retries with exponential backoff. Delivery is at least once.
3. The body is signed: `X-Uptime-Signature: sha256=<hex HMAC-SHA256 of the body with the sink's
   secret>`, as GitHub- and Stripe-style webhook consumers verify it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collector.config import NotificationSink
from collector.db import Notification
from protocol.redact import redact_check, redact_text

log = logging.getLogger("uptime.collector.notify")

EVENTS = ("outage.verified", "outage.resolved", "maintenance.started", "maintenance.ended", "budget.threshold")
# A claimed row is another replica's for this long; if that replica dies mid-delivery the row
# becomes due again afterwards (at least once, never lost).
CLAIM_SECONDS = 60
# Backoff between attempts: 2 s doubling to at most 10 minutes, with jitter so that a receiver
# coming back is not hit by every pending row at the same instant.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 600.0
BATCH = 50


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def redact_payload(value: Any) -> Any:
    """A payload as it may leave the collector: a receiver is no agent a check is assigned to, so
    a check definition in it shows its credentials redacted, and so does any URL in its text
    (protocol/redact.py). Applied before the outbox row is written: the table holds no secret either."""
    if isinstance(value, dict):
        if "headers" in value or "url" in value or "steps" in value:
            value = redact_check(value)
        return {k: redact_payload(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_payload(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _insert_ignore(session: AsyncSession):
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return postgresql.insert(Notification).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return sqlite.insert(Notification).on_conflict_do_nothing(index_elements=["dedupe_key"])


async def enqueue(
    session: AsyncSession, sinks: Sequence[NotificationSink], event: str, key: str, payload: dict[str, Any]
) -> int:
    """Write the fact to the outbox for every sink that wants it; returns how many rows were meant."""
    now = datetime.now(timezone.utc)
    body = redact_payload(json.loads(json.dumps({"event": event, **payload}, default=_json_default)))
    rows = [
        {"dedupe_key": f"{sink.name}|{event}|{key}"[:255], "sink": sink.name, "event": event,
         "payload": body,
         "created_at": now, "next_attempt_at": now, "attempts": 0}
        for sink in sinks if event in sink.events
    ]
    if rows:
        await session.execute(_insert_ignore(session), rows)
    return len(rows)


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook payload (`text`), with the full payload kept alongside."""
    event = payload["event"]
    policy = payload.get("policy", "?")
    window = payload.get("window") or {}
    if event == "outage.verified":
        text = f":red_circle: Outage verified for *{policy}* since {window.get('start')}"
    elif event == "outage.resolved":
        text = f":large_green_circle: Outage resolved for *{policy}*: {window.get('start')} to {window.get('end')} ({window.get('minutes')} min)"
    elif event.startswith("maintenance."):
        m = payload.get("maintenance") or {}
        text = f":wrench: Maintenance {event.split('.')[1]} for *{policy}*: {m.get('kind')} {m.get('start')} to {m.get('end')}"
    else:
        text = f":warning: *{policy}* has used {payload.get('budget_used_percent')} % of its downtime budget for {payload.get('period')}"
    if payload.get("report_url"):
        text += f" <{payload['report_url']}|report>"
    return {"text": text, "uptime": payload}


class Deliverer:
    def __init__(self, sessionmaker: async_sessionmaker, sinks: Iterable[NotificationSink]) -> None:
        self.sessionmaker = sessionmaker
        self.sinks = {s.name: s for s in sinks}
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def run_once(self, now: datetime | None = None) -> int:
        """Deliver what is due. Returns the number delivered in this pass."""
        if not self.sinks:
            return 0
        now = now or datetime.now(timezone.utc)
        async with self.sessionmaker() as session:
            due = (await session.scalars(
                select(Notification.id)
                .where(Notification.delivered_at.is_(None), Notification.next_attempt_at <= now,
                       (Notification.claimed_until.is_(None)) | (Notification.claimed_until < now))
                .order_by(Notification.id).limit(BATCH)
            )).all()
        delivered = 0
        for row_id in due:
            if await self._deliver(row_id, now):
                delivered += 1
        return delivered

    async def _claim(self, row_id: int, now: datetime) -> Notification | None:
        async with self.sessionmaker() as session:
            result = await session.execute(
                update(Notification)
                .where(Notification.id == row_id, Notification.delivered_at.is_(None),
                       (Notification.claimed_until.is_(None)) | (Notification.claimed_until < now))
                .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            )
            await session.commit()
            if result.rowcount != 1:
                return None  # another replica took it
            return await session.get(Notification, row_id)

    async def _deliver(self, row_id: int, now: datetime) -> bool:
        row = await self._claim(row_id, now)
        if row is None:
            return False
        sink = self.sinks.get(row.sink)
        error: str | None
        if sink is None:
            error = f"sink {row.sink!r} is no longer configured"
        else:
            error = await self._post(sink, row)
        async with self.sessionmaker() as session:
            values: dict[str, Any] = {"attempts": row.attempts + 1, "claimed_until": None}
            if error is None:
                values["delivered_at"] = datetime.now(timezone.utc)
                values["last_error"] = None
            else:
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** row.attempts) * random.uniform(0.5, 1.0)
                values["next_attempt_at"] = datetime.now(timezone.utc) + timedelta(seconds=delay)
                values["last_error"] = error[:500]
                log.warning("notification %s to %s failed (attempt %d): %s", row.event, row.sink, row.attempts + 1, error)
            await session.execute(update(Notification).where(Notification.id == row_id).values(**values))
            await session.commit()
        return error is None

    async def _post(self, sink: NotificationSink, row: Notification) -> str | None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        body_obj = slack_body(row.payload) if sink.format == "slack" else row.payload
        body = json.dumps(body_obj, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "uptime-collector webhook",
            "X-Uptime-Event": row.event,
            "X-Uptime-Delivery": str(row.id),
            "X-Uptime-Signature": sign(sink.secret, body),
        }
        try:
            async with self._http.post(sink.url, data=body, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=sink.timeout)) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
