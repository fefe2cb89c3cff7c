"""Reading the evidence: verified outage windows, a month's SLA report, a claimed outage checked."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from collector import store
from collector.errors import RequestError
from collector.reporting import claim_from_db, report_from_db
from collector.rules.periods import month_bounds

from .common import STATE, json_response, parse_ts, policy_named, require_read


def window_json(w: Any, now: datetime) -> dict[str, Any]:
    end = w.end
    minutes = ((end or now) - w.start).total_seconds() / 60
    return {
        "id": w.id,  # what an incident links to (POST /api/v1/incidents/{id}/links)
        "policy": w.policy,
        "start": w.start,
        "end": end,
        "open": end is None,
        "minutes": round(minutes, 3),
        "rule_hash": w.rule_hash,
        "evidence": w.evidence,
    }

async def get_outages(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    q = request.query
    policy = q.get("policy") or q.get("check")
    if policy is not None and policy not in state.policies:
        raise RequestError(f"query parameter 'policy': unknown policy {policy!r}", 404)
    since = parse_ts(q.get("since"), "since")
    until = parse_ts(q.get("until"), "until")
    open_only = q.get("open", "").lower() in ("1", "true", "yes")
    async with state.sessionmaker() as session:
        rows = await store.load_windows(session, policy, since, until, open_only)
    now = datetime.now(timezone.utc)
    return json_response({"outages": [window_json(w, now) for w in rows]})

async def get_report(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    policy = policy_named(request, request.match_info["policy"])
    period = request.query.get("period") or datetime.now(timezone.utc).strftime("%Y-%m")
    try:
        month_bounds(period, policy.timezone)
    except ValueError as err:
        raise RequestError(f"query parameter 'period': {err}") from None
    async with state.sessionmaker() as session:
        report = await report_from_db(session, policy, period, expected_by_component=state.expected_by_component(policy))
    return json_response(report)

async def get_claim(request: web.Request) -> web.Response:
    require_read(request)
    state = request.app[STATE]
    q = request.query
    if "policy" not in q:
        raise RequestError("query parameter 'policy' is required")
    policy = policy_named(request, q["policy"])
    start = parse_ts(q.get("start"), "start")
    end = parse_ts(q.get("end"), "end")
    if start is None or end is None:
        raise RequestError("query parameters 'start' and 'end' are required (RFC 3339)")
    if end <= start:
        raise RequestError("query parameter 'end': must be after 'start'")
    async with state.sessionmaker() as session:
        claim = await claim_from_db(session, policy, start, end, expected_by_component=state.expected_by_component(policy))
    return json_response(claim)
