"""Notifications through a durable outbox: signed webhooks, and Apprise for people.

1. A fact (outage verified or resolved, maintenance started or ended, a budget threshold crossed)
   is written to the `notifications` table in the same transaction as the decision behind it,
   once per sink and fact (a unique dedupe key), so re-deriving the same window never notifies twice.
2. Any collector replica claims a due row with a conditional UPDATE (healthchecks' sendalerts
   pattern: whoever updates 0 rows knows another process took it), POSTs it, and marks it
   delivered on a 2xx; otherwise it retries with exponential backoff. Delivery is at least once.
3. The body is signed: `X-Uptime-Signature: sha256=<hex HMAC-SHA256 of the body with the sink's
   secret>`, as GitHub- and Stripe-style webhook consumers verify it.
4. A sink of `kind: apprise` sends the same rows as a message written for people (title and
   body: durations as "1 h 12 min", times in UTC, links to the report page and the API) to each
   of its Apprise URLs (email, ntfy, PagerDuty, ...), from the same outbox with the same retries;
   a retry goes only to the URLs that did not take the message yet.
   Apprise URLs carry passwords and tokens: what Apprise itself hides in its privacy view of a
   URL is a secret, and no log line, stored error or CLI output shows it (protocol/redact.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import logging
import random
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence
from urllib.parse import unquote

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from collector.config import NotificationSink, _Mute, apprise_url_problem  # noqa: F401 - re-exported
from collector.db import Notification
from protocol.redact import (
    MIN_SECRET_CHARS,
    REDACTED,
    is_secret_header,
    is_secret_param,
    redact_check,
    redact_text,
    secret_values,
)

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


# --- text for people ----------------------------------------------------------------------------

def human_duration(minutes: float | None) -> str:
    """ "50 s", "6 min", "1 h 12 min", "2 d 3 h": whole seconds under a minute, whole minutes
    above (a person reads "6 min", not 5.9833333 min)."""
    if minutes is None:
        return "ongoing"
    seconds = max(0, round(float(minutes) * 60))
    if seconds < 60:
        return f"{seconds} s"
    total = round(seconds / 60)
    days, rest = divmod(total, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if mins and not days:  # past a day the minutes are noise
        parts.append(f"{mins} min")
    return " ".join(parts) or "0 min"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value).astimezone(timezone.utc)
        except ValueError:
            return None
    return None


def human_time(value: Any) -> str:
    """ "2026-09-14 10:03 UTC" (seconds only when there are some)."""
    moment = _moment(value)
    if moment is None:
        return str(value) if value else "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC")


def human_span(start: Any, end: Any) -> str:
    """ "2026-09-14 10:03 to 10:09 UTC", the date written once when both are on the same day."""
    a, b = _moment(start), _moment(end)
    if a is None or b is None:
        return f"{human_time(start)} to {human_time(end)}"
    if a.date() == b.date():
        return f"{human_time(a).removesuffix(' UTC')} to {b.strftime('%H:%M:%S' if b.second else '%H:%M')} UTC"
    return f"{human_time(a).removesuffix(' UTC')} to {human_time(b)}"


def evidence_links(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The report page (the collector's `public_url` + /policies/NAME/YYYY-MM, as the payload's
    report_url gives it) and the same month's report from the API (/api/v1/reports/NAME?period=)."""
    url = payload.get("report_url") or ""
    match = re.match(r"^(?P<base>.*)/policies/(?P<policy>[^/]+)/(?P<period>\d{4}-\d{2})$", url)
    if not match:
        return [("report", url)] if url else []
    api = f"{match['base']}/api/v1/reports/{match['policy']}?period={match['period']}"
    return [("report", url), ("API", api)]


def human_message(payload: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of a notification for people; the body ends with the links to the evidence."""
    event = payload.get("event", "")
    policy = payload.get("policy", "?")
    service = payload.get("service") or policy
    named = service if service == policy else f"{service} ({policy})"
    window = payload.get("window") or {}
    evidence = payload.get("evidence") or {}
    lines: list[str] = []
    if event == "outage.verified":
        title = f"Outage verified: {policy}"
        lines.append(f"{named} has been down since {human_time(window.get('start'))}.")
    elif event == "outage.resolved":
        title = f"Outage resolved: {policy} ({human_duration(window.get('minutes'))})"
        lines.append(f"{named} was down {human_span(window.get('start'), window.get('end'))} "
                     f"({human_duration(window.get('minutes'))}).")
    elif event.startswith("maintenance."):
        m = payload.get("maintenance") or {}
        what = event.split(".", 1)[1]
        start, end = _moment(m.get("start")), _moment(m.get("end"))
        length = human_duration((end - start).total_seconds() / 60) if start and end else "?"
        title = f"Maintenance {what}: {policy}"
        lines.append(f"{m.get('kind', '?')} maintenance for {policy}, {human_span(m.get('start'), m.get('end'))} "
                     f"({length}), has {what}.")
        if m.get("note"):
            lines.append(f"Note: {m['note']}")
    elif event == "budget.threshold":
        used = payload.get("budget_used_percent")
        downtime = human_duration(payload.get("downtime_minutes"))
        if used is None:  # no budget at all (a 100 % target): any downtime is past it
            title = f"Downtime budget: {policy} has none and had downtime"
            lines.append(f"{policy} allows no downtime in {payload.get('period', '?')} and has had {downtime}.")
        else:
            title = f"Downtime budget: {policy} at {used} %"
            lines.append(f"{policy} has used {used} % of its downtime budget for {payload.get('period', '?')}: "
                         f"{downtime} of {human_duration(payload.get('allowed_downtime_minutes'))} allowed.")
        if payload.get("availability_percent") is not None:
            lines.append(f"Availability so far: {payload['availability_percent']} %.")
    elif event == "test":
        title = f"Test notification from uptime-collector ({payload.get('sink', '?')})"
        lines.append(f"Sent {human_time(payload.get('sent_at'))} by `uptime-collector notify test`; "
                     "if you read this, notifications reach you.")
    else:
        title = f"{event}: {policy}"
        lines.append(f"{event} for {policy}.")
    if evidence.get("agents_failed"):
        lines.append(f"Failed at: {', '.join(evidence['agents_failed'])}"
                     + (f"; no report from: {', '.join(evidence['agents_missing'])}" if evidence.get("agents_missing") else "")
                     + (f" ({evidence['rounds']} rounds)" if evidence.get("rounds") else "") + ".")
    links = evidence_links(payload)
    if payload.get("status_url"):
        links.append(("status page", payload["status_url"]))
    if links:
        lines.append("")
        lines.extend(f"{label}: {url}" for label, url in links)
    return title, "\n".join(lines)


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook payload (`text`), with the full payload kept alongside."""
    event = payload["event"]
    policy = payload.get("policy", "?")
    window = payload.get("window") or {}
    if event == "outage.verified":
        text = f":red_circle: Outage verified for *{policy}* since {human_time(window.get('start'))}"
    elif event == "outage.resolved":
        text = (f":large_green_circle: Outage resolved for *{policy}*: {human_span(window.get('start'), window.get('end'))} "
                f"({human_duration(window.get('minutes'))})")
    elif event.startswith("maintenance."):
        m = payload.get("maintenance") or {}
        text = f":wrench: Maintenance {event.split('.')[1]} for *{policy}*: {m.get('kind')} {human_span(m.get('start'), m.get('end'))}"
    elif event == "test":
        text = f":white_check_mark: Test notification from uptime-collector ({payload.get('sink', '?')})"
    elif payload.get("budget_used_percent") is None:  # no budget at all (a 100 % target)
        text = (f":warning: *{policy}* allows no downtime in {payload.get('period')} and has had "
                f"{human_duration(payload.get('downtime_minutes'))}")
    else:
        text = (f":warning: *{policy}* has used {payload.get('budget_used_percent')} % of its downtime budget for "
                f"{payload.get('period')} ({human_duration(payload.get('downtime_minutes'))} of "
                f"{human_duration(payload.get('allowed_downtime_minutes'))})")
    for label, url in evidence_links(payload):
        text += f" <{url}|{label}>"
    return {"text": text, "uptime": payload}


# --- Apprise -------------------------------------------------------------------------------------

# Every secret of a configured Apprise URL, for the log filter below (filled as sinks are built).
_APPRISE_SECRETS: set[str] = set()
_FILTER_LOCK = threading.Lock()
_FILTERED_LOGGERS = ("apprise", "urllib3.connectionpool")


def _apprise():
    import apprise  # imported when a sink uses it: loading its plugins takes a while

    return apprise


def shown_url(url: str) -> str:
    """An Apprise URL as it may be shown: Apprise's privacy view without its query (Apprise's
    defaults, and headers such as json://HOST?+X-Api-Key=...), any secret left replaced."""
    return redact_text(private_url(url).split("?", 1)[0], apprise_secrets(url))


def private_url(url: str) -> str:
    """The URL as Apprise shows it in privacy mode (passwords, tokens and keys masked), or only
    its scheme when Apprise cannot read it."""
    instance = None
    mute = _Mute()  # Apprise would log a URL it cannot read as written (collector/config.py)
    logging.getLogger("apprise").addFilter(mute)
    try:
        instance = _apprise().Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # noqa: BLE001 - any failure: show nothing of it
        instance = None
    finally:
        logging.getLogger("apprise").removeFilter(mute)
    if instance:
        try:
            return instance.url(privacy=True)
        except Exception:  # noqa: BLE001
            pass
    return f"{url.split('://', 1)[0]}://{REDACTED}" if "://" in url else REDACTED


def apprise_secrets(url: str) -> frozenset[str]:
    """Every part of an Apprise URL that its privacy view hides (a token in the path, as
    pagerduty://KEY@KEY or tgram://TOKEN/CHAT put it), plus the credentials protocol/redact.py
    finds in any URL. Over-hiding a host name is the price of never showing a token."""
    shown = private_url(url)
    found = set(secret_values({"url": url}))
    rest = url.split("://", 1)[1] if "://" in url else url
    rest, _, query = rest.partition("?")
    parts = re.split(r"[/:@#,+;]", rest)
    for pair in query.split("&") if query else ():
        name, _, value = pair.partition("=")
        bare = unquote(name).lstrip("+-:")
        if value and (is_secret_param(bare) or is_secret_header(bare)):
            # a secret header (json://HOST?+X-Api-Key=...) Apprise shows even in privacy mode
            found.update((value, unquote(value)))
        # a parameter's name is never secret, nor the value of a setting known to be harmless;
        # any other value Apprise does not show (pass=, token=, webhook=, ...) is
        if name.lower() not in _HARMLESS_PARAMS:
            parts.extend(re.split(r"[,+;]", value))
    for part in parts:
        for value in (part, unquote(part)):
            if len(value) >= MIN_SECRET_CHARS and value not in shown:
                found.add(value)
    return frozenset(found)


# Apprise URL parameters whose values are settings, not credentials: left readable in log lines.
_HARMLESS_PARAMS = frozenset((
    "mode", "format", "overflow", "retry", "wait", "optional", "cto", "rto", "priority", "region", "image",
    "from", "to", "cc", "bcc", "name", "smtp", "method", "verify", "tags", "title", "lang", "tz", "auth",
    "port", "secure", "timeout", "emojis", "store", "discovery", "avatar", "batch"))


class _RedactApprise(logging.Filter):
    """Apprise (and the HTTP library under it) may log a URL with its token in it, at DEBUG even
    the request URL and body: every record is rewritten without the configured secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _APPRISE_SECRETS:
            return True
        message = record.getMessage()
        clean = redact_text(message, _APPRISE_SECRETS)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactApprise()


def _register_secrets(urls: Iterable[str]) -> frozenset[str]:
    found: set[str] = set()
    for url in urls:
        found |= apprise_secrets(url)
    with _FILTER_LOCK:
        _APPRISE_SECRETS.update(found)
        for name in _FILTERED_LOGGERS:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    return frozenset(found)


# Which URLs of an Apprise sink already took a row, kept in the row's payload under this key (as
# "index:URL in its privacy view", no secret): a retry after a partial failure goes only to the
# others, so the person paged by the first attempt is not paged again.
DELIVERED_KEY = "_apprise_delivered"


def _url_key(index: int, url: str) -> str:
    return f"{index}:{shown_url(url)}"


async def send_apprise(sink: NotificationSink, payload: dict[str, Any]) -> tuple[str | None, list[str]]:
    """Send the payload's message to every URL of the sink not yet in its DELIVERED_KEY: (None
    when all have it now, else why not, per URL in its privacy view with every secret removed;
    the keys of every URL that has it now)."""
    apprise = _apprise()
    secrets = _register_secrets(sink.urls)
    title, body = human_message(payload)
    notify_type = {"outage.verified": apprise.NotifyType.FAILURE, "outage.resolved": apprise.NotifyType.SUCCESS,
                   "budget.threshold": apprise.NotifyType.WARNING}.get(payload.get("event", ""), apprise.NotifyType.INFO)
    kwargs: dict[str, Any] = {"body": body, "title": title, "notify_type": notify_type,
                              "body_format": apprise.NotifyFormat.TEXT}
    done = set(payload.get(DELIVERED_KEY) or ())
    pending = [(key, url) for key, url in ((_url_key(i, u), u) for i, u in enumerate(sink.urls)) if key not in done]

    async def one(url: str) -> str | None:
        apobj = apprise.Apprise()
        apobj.add(url)
        try:
            if "timeout" in inspect.signature(apprise.Apprise.notify).parameters:
                # Apprise's own call timeout (2.x): an unfinished service reports TIMEOUT
                result = await apobj.async_notify(**kwargs, timeout=sink.timeout)
            else:  # older Apprise: no call timeout of its own, and a bare True/False
                result = await asyncio.wait_for(apobj.async_notify(**kwargs), sink.timeout)
        except TimeoutError:
            return f"{shown_url(url)}: no answer within {human_duration(sink.timeout / 60)}"
        except Exception as err:  # noqa: BLE001 - a plugin's failure is a failed attempt, retried
            return f"{shown_url(url)}: {type(err).__name__}: {err}"
        if result:
            return None
        reasons = [entry.message for service in getattr(result, "results", ()) for entry in service.logs()
                   if entry.level in ("WARNING", "ERROR", "CRITICAL")]
        return f"{shown_url(url)}: {reasons[-1] if reasons else getattr(result, 'status', 'failed')}"

    outcomes = await asyncio.gather(*(one(url) for _, url in pending))
    delivered = sorted(done | {key for (key, _), problem in zip(pending, outcomes) if problem is None})
    problems = [problem for problem in outcomes if problem is not None]
    return (redact_text("; ".join(problems), secrets) if problems else None), delivered


class Deliverer:
    def __init__(self, sessionmaker: async_sessionmaker, sinks: Iterable[NotificationSink]) -> None:
        self.sessionmaker = sessionmaker
        self.sinks = {s.name: s for s in sinks}
        self._http: aiohttp.ClientSession | None = None
        # from the start, so that no log line of Apprise shows a configured URL's token
        apprise_urls = [url for s in self.sinks.values() if s.kind == "apprise" for url in s.urls]
        if apprise_urls:
            _register_secrets(apprise_urls)

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
        payload_before = row.payload
        if sink is None:
            error = f"sink {row.sink!r} is no longer configured"
        else:
            error = await self._post(sink, row)
        async with self.sessionmaker() as session:
            values: dict[str, Any] = {"attempts": row.attempts + 1, "claimed_until": None}
            if row.payload is not payload_before:  # an Apprise sink's progress over its URLs
                values["payload"] = row.payload
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

    async def send_now(self, sink: NotificationSink, payload: dict[str, Any]) -> str | None:
        """Send one message through `sink` at once, outside the outbox (`notify test`): None when
        it was delivered, else why not."""
        row = Notification(id=0, sink=sink.name, event=payload.get("event", "test"),
                           payload=redact_payload(json.loads(json.dumps(payload, default=_json_default))))
        return await self._post(sink, row)

    async def _post(self, sink: NotificationSink, row: Notification) -> str | None:
        if sink.kind == "apprise":
            error, delivered = await send_apprise(sink, row.payload)
            if delivered != list(row.payload.get(DELIVERED_KEY) or ()):
                row.payload = {**row.payload, DELIVERED_KEY: delivered}  # stored with the attempt
            return error
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
