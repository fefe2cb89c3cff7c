"""`uptime-collector`: serve, demo, migrate, agents, maintenance, incidents, report, verify-claim, presets.

A user's mistake (bad config, bad input file, unknown policy) ends with one clear message on
stderr and exit code 2; nothing is half-written and no traceback is shown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

import click

from collector.config import ConfigError, load_config

log = logging.getLogger("uptime.collector")


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at DEBUG, check definitions with their
    # credentials among them (protocol/redact.py): never, whatever --log-level says.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """Collector of a multi-agent synthetic uptime monitor: stores the agents' evidence and turns it
    into verified outage windows and SLA reports."""
    setup_logging(log_level.upper())


def _load(config_path: str):
    try:
        return load_config(config_path)
    except ConfigError as err:
        fail(str(err))


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
def serve(config_path: str) -> None:
    """Run the collector: ingest API, outage evaluation, reports, /metrics."""
    from aiohttp import web

    from collector.app import create_app
    from collector.service import CollectorState

    config = _load(config_path)
    try:
        state = CollectorState.create(config)
    except ConfigError as err:
        fail(f"{config_path}: {err}")
    # Bind first: a port in use is one line, before anything (migrations, jobs) has started.
    try:
        sock = _bound_socket(config.listen.host, config.listen.port)
    except OSError as err:
        fail(f"listen: cannot listen on {config.listen.host}:{config.listen.port}: {err.strerror or err}")
    app = create_app(state)
    log.info("collector listening on http://%s:%d (database %s)", config.listen.host, sock.getsockname()[1],
             config.database_url.split("://", 1)[0])
    web.run_app(app, sock=sock, print=None, access_log=None)


def _bound_socket(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--database-url", help="Database URL (instead of --config).")
@click.option("--downgrade", "downgrade_to", help="Downgrade to this revision instead ('base' = empty).")
def migrate(config_path: str | None, database_url: str | None, downgrade_to: str | None) -> None:
    """Bring the database schema up to date (the collector also does this when it starts)."""
    from collector import migrate as migrations

    if not database_url:
        if not config_path:
            fail("give --config PATH or --database-url URL")
        database_url = _load(config_path).database_url
    if downgrade_to:
        migrations.downgrade(database_url, downgrade_to)
        click.echo(f"downgraded to {downgrade_to}")
    else:
        migrations.upgrade(database_url)
        click.echo("schema up to date")


@main.command()
@click.option("--duration", default=60.0, show_default=True, help="Seconds the demo runs at most.")
@click.option("--keep-serving", is_flag=True, help="Keep the collector and its status page up until Ctrl-C.")
def demo(duration: float, keep_serving: bool) -> None:
    """Run a self-contained demo: a collector, six agents and a target that goes down and comes back."""
    from collector.demo import run_demo

    # The demo narrates what happens itself; the components' own logs would repeat it.
    logging.getLogger("agent").setLevel(logging.ERROR)
    logging.getLogger("uptime").setLevel(logging.WARNING)
    try:
        code = asyncio.run(run_demo(duration, keep_serving))
    except KeyboardInterrupt:
        click.echo("\ndemo stopped")
        code = 130
    sys.exit(code)


@main.group()
def agents() -> None:
    """Register, list and revoke agents (each has its own token; only its hash is stored)."""


def _run(coro):
    """asyncio.run for the commands that use the database: a database that cannot be reached or
    read is one line naming it, not a traceback."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        return asyncio.run(coro)
    except (OperationalError, DBAPIError) as err:
        fail(f"database_url: the database does not answer or cannot be read: {str(getattr(err, 'orig', err)).splitlines()[0]}")
    except (ConnectionError, OSError) as err:
        fail(f"database_url: cannot connect to the database: {err.strerror or err}")


def _database_of(config_path: str) -> str:
    return _load(config_path).database_url


async def _with_session(database_url: str, work):
    from collector.db import make_engine, make_sessionmaker
    from collector.migrate import upgrade_async

    await upgrade_async(database_url)
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


@agents.command("add")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--public-key", "public_key", default=None, metavar="KEY",
              help="The agent's public key, ed25519:<base64> (uptime-agent key show). For an agent "
                   "registered before, only the key is registered (a rotation: older keys stay) and its "
                   "token is kept.")
def agents_add(name: str, config_path: str, public_key: str | None) -> None:
    """Register NAME (or give it a new token) and print the token once; with --public-key, register
    its signing key (logged in the evidence log)."""
    import re
    import secrets

    from collector import store
    from collector.config import AGENT_ID_PATTERN, hash_token

    if not re.match(AGENT_ID_PATTERN, name):
        fail(f"NAME: invalid agent id {name!r}: use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    config = _load(config_path)
    if public_key is not None:
        _agents_add_key(config, config_path, name, public_key)
        return
    token = secrets.token_urlsafe(32)
    new = _run(_with_session(config.database_url, lambda s: store.register_agent(s, name, hash_token(token))))
    click.echo(token)
    click.echo(f"{'registered' if new else 'new token for'} agent {name}; this token is shown only once.", err=True)
    if name not in {a.id for a in config.agents}:
        click.echo(f"note: {name} is not listed under agents: in {config_path}; add it there so that checks expect it.", err=True)


def _agents_add_key(config, config_path: str, name: str, public_key: str) -> None:
    """agents add --public-key: the key (and, for a new agent, a token) in one transaction."""
    import secrets

    from collector import store
    from collector.config import hash_token
    from evidence.keys import BadKey, parse_public_key

    try:
        parse_public_key(public_key, "--public-key")
    except BadKey as err:
        fail(str(err))
    token = secrets.token_urlsafe(32)

    async def work(session):
        new_agent = False
        if not await store.agent_exists(session, name):
            new_agent = await store.register_agent(session, name, hash_token(token))
            await session.flush()
        # a clash raises before the commit: neither the agent nor the key is stored
        row, new_key = await store.register_agent_key(session, name, public_key, registered_by="cli")
        return (row.key_id, row.log_index), new_agent, new_key

    try:
        key, new_agent, new_key = _run(_with_session(config.database_url, work))
    except store.KeyConflict as err:
        fail(str(err).replace("public_key:", "--public-key:", 1))
    if new_agent:
        click.echo(token)
        click.echo(f"registered agent {name}; this token is shown only once.", err=True)
    what = "registered" if new_key else "already registered:"
    click.echo(f"{what} key {key[0]} of agent {name} (log entry {key[1]})", err=True)


@agents.command("revoke")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
def agents_revoke(name: str, config_path: str) -> None:
    """Revoke NAME's token at once; its stored results remain as evidence."""
    from collector import store

    found = _run(_with_session(_database_of(config_path), lambda s: store.revoke_agent(s, name)))
    if not found:
        fail(f"NAME: no agent {name!r} is registered")
    click.echo(f"revoked agent {name}")


@agents.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def agents_list(config_path: str, fmt: str) -> None:
    """List registered agents with their last contact and clock offset."""
    from collector import store

    rows = _run(_with_session(_database_of(config_path), store.list_agents))
    data = [{"id": a.id, "active": a.revoked_at is None and a.token_sha256 is not None,
             "last_seen": a.last_seen, "clock_offset_seconds": a.clock_offset_seconds} for a in rows]
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=_json_default))
        return
    for a in data:
        seen = _json_default(a["last_seen"]) if a["last_seen"] else "never"
        click.echo(f"{a['id']:16} {'active' if a['active'] else 'revoked':8} last seen {seen}")


@main.group()
def maintenance() -> None:
    """Announce, list and cancel maintenance in the collector's database (as the API does).

    The CLI stamps when it recorded an announcement by its own clock (`recorded_at`), and notice
    is judged from that; announcements are never changed or deleted, only cancelled."""


async def _policies_in_force(session, config) -> dict:
    """The policies a collector on this config and database has in force: the config's, and the
    checks and contract policies the database holds (changed through the API)."""
    from collector import store
    from collector.checks import check_set, policy_set
    from collector.db import Check, ContractPolicy
    from collector.service import build_live_policies

    policies = {lp.name: lp.policy for lp in build_live_policies(config, strict=False)}
    checks = await store.load_provisioned(session, Check)
    contracts = await store.load_provisioned(session, ContractPolicy)
    if checks or contracts:
        live = build_live_policies(config, check_set(checks).active, list(policy_set(contracts).active.values()),
                                   strict=False)
        policies.update({lp.name: lp.policy for lp in live})
    return policies


@maintenance.command("announce")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--policy", required=True, help="The policy the maintenance is for.")
@click.option("--kind", required=True, help="A maintenance kind the policy accepts (e.g. scheduled, emergency).")
@click.option("--start", required=True, help="Start (RFC 3339 with offset); with --rrule, the first occurrence (DTSTART).")
@click.option("--end", help="End (RFC 3339 with offset); not with --rrule.")
@click.option("--rrule", help="Recurring: an RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=SU (at most hourly).")
@click.option("--duration", help="With --rrule: each occurrence's length (2h, 90m, PT2H).")
@click.option("--timezone", "tz_name", help="With --rrule: the zone the rule repeats in (default UTC).")
@click.option("--announced", help="When notice was given, if before now (RFC 3339); shown as the stated time.")
@click.option("--note", default="", help="What the maintenance is.")
@click.option("--author", default="", help="Who records it (free text).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def maintenance_announce(config_path, policy, kind, start, end, rrule, duration, tz_name, announced, note, author,
                         fmt) -> None:
    """Record a maintenance announcement, validated exactly as POST /api/v1/maintenance; with
    --rrule and --duration, recurring maintenance whose every occurrence is judged as if
    announced now."""
    from collector import store
    from collector.api.maintenance import judgement_of, record_of, validate_announcement
    from collector.errors import RequestError

    config = _load(config_path)
    if rrule is not None or duration is not None or tz_name is not None:
        _announce_series(config, policy, kind, start, end, rrule, duration, tz_name, announced, note, author, fmt)
        return
    if end is None:
        fail("--end: required (or --rrule and --duration for recurring maintenance)")
    data = {"policy": policy, "kind": kind, "start": start, "end": end, "note": note, "author": author}
    if announced is not None:
        data["announced"] = announced

    async def work(session):
        policies = await _policies_in_force(session, config)
        m = validate_announcement(data, policies, store.utcnow())
        row = await store.add_maintenance(session, m.policy, m.kind, m.start, m.end, m.note, recorded_by="cli",
                                          stated_announced=m.announced, author=m.author)
        judgement = judgement_of(policies[m.policy], await store.list_maintenance(session, m.policy), row.id)
        return {**record_of(row), "judgement": judgement}

    try:
        out = _run(_with_session(config.database_url, work))
    except RequestError as err:
        fail(err.message)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"recorded maintenance {out['id']}: {_maintenance_line(out)}")
    judgement = out["judgement"]
    if judgement is not None:
        if judgement["compliant"]:
            click.echo(f"  compliant; notice: {judgement['notice']['detail']}")
        for rule in judgement["broken_rules"]:
            click.echo(f"  breaks {rule['rule']}: {rule['detail']}")


def _announce_series(config, policy, kind, start, end, rrule, duration, tz_name, announced, note, author, fmt) -> None:
    """`maintenance announce --rrule R --duration D`: a series, as POST /api/v1/maintenance with
    `rrule` and `duration` records it (the same validation and messages, the options named)."""
    from collector import store
    from collector.api.maintenance import record_series, validate_series
    from collector.errors import RequestError

    for option, value in (("--rrule", rrule), ("--duration", duration)):
        if value is None:
            fail(f"{option}: required for recurring maintenance (--rrule with --duration)")
    if end is not None:
        fail("--end: recurring maintenance has a --duration (each occurrence's length), not an --end")
    data = {"policy": policy, "kind": kind, "start": start, "rrule": rrule, "duration": duration, "note": note,
            "author": author, "timezone": tz_name or "UTC"}
    if announced is not None:
        data["announced"] = announced

    async def work(session):
        policies = await _policies_in_force(session, config)
        m, recurrence = validate_series(data, policies, store.utcnow())
        return await record_series(session, m, recurrence, policies[m.policy], recorded_by="cli")

    try:
        out = _run(_with_session(config.database_url, work))
    except RequestError as err:
        fail(err.message)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"recorded maintenance series {out['id']}: {_series_line(out)}")
    for o in out["judgement"] or []:
        verdict = "compliant" if o["compliant"] else "breaks " + ", ".join(r["rule"] for r in o["broken_rules"])
        click.echo(f"  {o['start']} to {o['end']}: {verdict}; notice: {o['notice']['detail']}")


def _series_line(m: dict) -> str:
    by = m["recorded_by"] + (f", {m['author']}" if m["author"] else "")
    line = (f"{m['policy']} {m['kind']} {m['rrule']} for {m['duration']} from {m['start']} ({m['timezone']}), "
            f"recorded {m['recorded_at']} ({by})")
    if m["stated_announced"]:
        line += f", stated announced {m['stated_announced']}"
    if m["cancelled"]:
        line += f"; CANCELLED {m['cancelled_at']} ({m['cancelled_by']})" + (f": {m['cancel_reason']}" if m["cancel_reason"] else "")
    if m["cancelled_occurrences"]:
        line += f"; {len(m['cancelled_occurrences'])} occurrence(s) cancelled"
    nxt = [o["start"] for o in m["next_occurrences"] if not o["cancelled"]]
    return line + (f"; next {nxt[0]}" if nxt else "") + (f" - {m['note']}" if m["note"] else "")


def _maintenance_line(m: dict) -> str:
    by = m["recorded_by"] + (f", {m['author']}" if m["author"] else "")
    line = f"{m['policy']} {m['kind']} {m['start']} to {m['end']}, recorded {m['recorded_at']} ({by})"
    if m["stated_announced"]:
        line += f", stated announced {m['stated_announced']}"
    if m["cancelled"]:
        line += f"; CANCELLED {m['cancelled_at']} ({m['cancelled_by']})" + (f": {m['cancel_reason']}" if m["cancel_reason"] else "")
    return line + (f" - {m['note']}" if m["note"] else "")


@maintenance.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--policy", help="Only this policy's announcements.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def maintenance_list(config_path, policy, fmt) -> None:
    """List every announcement, cancelled ones with their cancellation, in start order."""
    from collector import store
    from collector.api.maintenance import record_of

    from collector.api.maintenance import series_record

    async def work(session):
        now = store.utcnow()
        return ([record_of(r) for r in await store.list_maintenance(session, policy)],
                [series_record(r, c, now) for r, c in await store.list_maintenance_series(session, policy)])

    rows, series = _run(_with_session(_database_of(config_path), work))
    if fmt == "json":
        # the one-off announcements, then the recurring series (told apart by their "rrule")
        click.echo(json.dumps(rows + series, indent=2))
        return
    if not rows and not series:
        click.echo("no maintenance announced" + (f" for {policy}" if policy else ""))
    for m in rows:
        click.echo(f"{m['id']:>5}  {_maintenance_line(m)}")
    for m in series:
        click.echo(f"   s{m['id']}  {_series_line(m)}")


@maintenance.command("cancel")
@click.argument("id", type=click.IntRange(min=1, max=2**31 - 1))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--reason", default="", help="Why it is cancelled.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def maintenance_cancel(id, config_path, reason, fmt) -> None:  # noqa: A002 (the argument's name in --help)
    """Cancel announcement ID: it stays listed, marked cancelled, and excludes nothing."""
    from collector import store
    from collector.api.maintenance import cancel_reason_from, record_of
    from collector.errors import RequestError

    try:
        reason = cancel_reason_from(reason, None)
    except RequestError as err:
        fail(err.message)

    async def work(session):
        row, cancelled = await store.cancel_maintenance(session, id, cancelled_by="cli", reason=reason)
        return (record_of(row) if row is not None else None), cancelled

    record, cancelled = _run(_with_session(_database_of(config_path), work))
    if record is None:
        fail(f"ID: no maintenance announcement with id {id}")
    if not cancelled:
        fail(f"ID: maintenance announcement {id} was already cancelled at {record['cancelled_at']}; "
             "a cancellation stands (for a change, announce a new one)")
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"cancelled maintenance {id}: {_maintenance_line(record)}")


@main.group()
def incidents() -> None:
    """Open incidents, post updates, link evidence and list them (as the API does).

    Every incident and update is stamped with the collector's clock and recorded as by "cli";
    updates are only ever added, and the "resolved" update resolves the incident."""


# The request fields of collector.api.incidents as the options that give them.
_INCIDENT_OPTIONS = {"title": "--title", "impact": "--impact", "policies": "--policy", "status": "--status",
                     "message": "--message", "author": "--author", "windows": "--window",
                     "maintenance": "--maintenance", "postmortem_url": "--postmortem-url", "id": "ID"}


def _incident_fail(err) -> None:
    """The API's message with the field it names put as the option that gave it."""
    field, sep, rest = err.message.partition(": ")
    base = field.split("[", 1)[0]
    fail(f"{_INCIDENT_OPTIONS[base]}: {rest}" if sep and base in _INCIDENT_OPTIONS else err.message)


def _incident_lines(i: dict, full: bool = False) -> list[str]:
    state = f"resolved {i['resolved_at']}" if i["resolved_at"] else "open"
    head = f"{i['id']:>5}  [{i['impact']}] {i['title']} - {i['status']}, {state} ({', '.join(i['policies'])})"
    if not full:
        return [head]
    lines = [head, f"       opened {i['created_at']} ({i['created_by']}{', ' + i['author'] if i['author'] else ''})"]
    for u in i["updates"]:
        by = u["recorded_by"] + (f", {u['author']}" if u["author"] else "")
        lines.append(f"       {u['recorded_at']} {u['status']} ({by}): {u['message']}")
    for w in i["windows"]:
        lines.append(f"       window {w['id']}: {w['policy']} from {w['start']}")
    for m in i["maintenance"]:
        lines.append(f"       maintenance {m['id']}: {m['policy']} from {m['start']}")
    if i["postmortem_url"]:
        lines.append(f"       post-mortem: {i['postmortem_url']}")
    return lines


def _incident_out(record: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    click.echo("\n".join(_incident_lines(record, full=True)))


_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
_CONFIG = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
                       help="Collector YAML config.")
_ID = click.IntRange(min=1, max=2**31 - 1)


@incidents.command("open")
@_CONFIG
@click.option("--title", required=True, help="What readers see as the incident's name.")
@click.option("--impact", required=True, type=click.Choice(["none", "minor", "major", "critical"]))
@click.option("--policy", "policies", required=True, multiple=True, help="A service (policy) affected; repeatable.")
@click.option("--status", default="investigating", show_default=True,
              type=click.Choice(["investigating", "identified", "monitoring", "resolved"]))
@click.option("--message", required=True, help="The first update's text.")
@click.option("--author", default="", help="Who posts it (free text).")
@click.option("--window", "windows", multiple=True, type=_ID, help="A verified outage window id to link; repeatable.")
@click.option("--maintenance", "maintenance_ids", multiple=True, type=_ID,
              help="A maintenance announcement id to link; repeatable.")
@click.option("--postmortem-url", help="The post-mortem's http or https URL.")
@_FORMAT
def incidents_open(config_path, title, impact, policies, status, message, author, windows, maintenance_ids,
                   postmortem_url, fmt) -> None:
    """Open an incident with its first update, validated exactly as POST /api/v1/incidents."""
    from collector import incidents as service
    from collector.api.incidents import validate_incident
    from collector.errors import RequestError

    config = _load(config_path)
    data = {"title": title, "impact": impact, "policies": list(policies), "status": status, "message": message,
            "author": author, "windows": list(windows), "maintenance": list(maintenance_ids)}
    if postmortem_url is not None:
        data["postmortem_url"] = postmortem_url

    async def work(session):
        m = validate_incident(data, await _policies_in_force(session, config))
        rec = await service.open_incident(
            session, title=m.title, impact=m.impact, policies=m.policies, status=m.status, message=m.message,
            author=m.author, recorded_by="cli", windows=m.windows, maintenance=m.maintenance,
            postmortem_url=m.postmortem_url)
        return service.record_of(rec)

    try:
        _incident_out(_run(_with_session(config.database_url, work)), fmt)
    except RequestError as err:
        _incident_fail(err)


@incidents.command("update")
@click.argument("id", type=_ID)
@_CONFIG
@click.option("--status", required=True, type=click.Choice(["investigating", "identified", "monitoring", "resolved"]))
@click.option("--message", required=True, help="The update's text.")
@click.option("--author", default="", help="Who posts it (free text).")
@_FORMAT
def incidents_update(id, config_path, status, message, author, fmt) -> None:  # noqa: A002 (the argument's name)
    """Post an update on incident ID, validated as POST /api/v1/incidents/ID/updates; status
    "resolved" resolves it, and a resolved incident takes no more updates."""
    from collector import incidents as service
    from collector.api.incidents import validate_update
    from collector.errors import RequestError

    try:
        m = validate_update({"status": status, "message": message, "author": author})
    except RequestError as err:
        _incident_fail(err)

    async def work(session):
        return service.record_of(await service.post_update(session, id, status=m.status, message=m.message,
                                                           author=m.author, recorded_by="cli"))

    try:
        _incident_out(_run(_with_session(_database_of(config_path), work)), fmt)
    except RequestError as err:
        _incident_fail(err)


@incidents.command("link")
@click.argument("id", type=_ID)
@_CONFIG
@click.option("--window", "windows", multiple=True, type=_ID, help="A verified outage window id to link; repeatable.")
@click.option("--maintenance", "maintenance_ids", multiple=True, type=_ID,
              help="A maintenance announcement id to link; repeatable.")
@click.option("--postmortem-url", help="The post-mortem's http or https URL (set once).")
@_FORMAT
def incidents_link(id, config_path, windows, maintenance_ids, postmortem_url, fmt) -> None:  # noqa: A002
    """Link windows and maintenance to incident ID, open or resolved, and set its post-mortem link:
    all in one transaction, so a refused part records nothing."""
    from collector import incidents as service
    from collector.api.incidents import validate_links, validate_postmortem
    from collector.errors import RequestError

    if not windows and not maintenance_ids and postmortem_url is None:
        fail("give --window, --maintenance or --postmortem-url")
    try:
        links = validate_links({"windows": list(windows), "maintenance": list(maintenance_ids)}) \
            if windows or maintenance_ids else None
        postmortem = validate_postmortem({"postmortem_url": postmortem_url}) if postmortem_url is not None else None
    except RequestError as err:
        _incident_fail(err)

    async def work(session):
        rec = await service.load_incident(session, id)
        if rec is None:
            raise RequestError(f"id: no incident with id {id}", 404)
        if links is not None:
            rec = await service.add_links(session, id, windows=links.windows, maintenance=links.maintenance,
                                          linked_by="cli")
        if postmortem is not None:
            rec = await service.set_postmortem(session, id, postmortem.postmortem_url, by="cli")
        return service.record_of(rec)

    try:
        _incident_out(_run(_with_session(_database_of(config_path), work)), fmt)
    except RequestError as err:
        _incident_fail(err)


@incidents.command("list")
@_CONFIG
@click.option("--state", type=click.Choice(["open", "resolved"]), help="Only open or only resolved incidents.")
@_FORMAT
def incidents_list(config_path, state, fmt) -> None:
    """List incidents, newest first."""
    from collector import incidents as service

    async def work(session):
        return [service.record_of(r) for r in await service.list_incidents(session, state=state)]

    rows = _run(_with_session(_database_of(config_path), work))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no incidents" + (f" {state}" if state else ""))
    for i in rows:
        click.echo(_incident_lines(i)[0])


@incidents.command("show")
@click.argument("id", type=_ID)
@_CONFIG
@_FORMAT
def incidents_show(id, config_path, fmt) -> None:  # noqa: A002 (the argument's name in --help)
    """Show incident ID with every update and link."""
    from collector import incidents as service

    async def work(session):
        rec = await service.load_incident(session, id)
        return service.record_of(rec) if rec is not None else None

    record = _run(_with_session(_database_of(config_path), work))
    if record is None:
        fail(f"ID: no incident with id {id}")
    _incident_out(record, fmt)


@maintenance.command("cancel-occurrence")
@click.argument("series_id", type=click.IntRange(min=1, max=2**31 - 1))
@click.option("--start", required=True, help="The occurrence's start (RFC 3339 with offset), as listed.")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--reason", default="", help="Why it is cancelled.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def maintenance_cancel_occurrence(series_id, start, config_path, reason, fmt) -> None:
    """Cancel one occurrence of recurring series SERIES_ID: it stays listed, cancelled, and excludes nothing."""
    from protocol.timestamps import parse_rfc3339

    from collector.api.maintenance import cancel_reason_from, cancel_series_occurrence
    from collector.errors import RequestError

    try:
        moment = parse_rfc3339(start)
    except (ValueError, OverflowError):
        fail(f"--start: {start!r} is not an RFC 3339 timestamp with an offset")
    try:
        reason = cancel_reason_from(reason, None)
    except RequestError as err:
        fail(err.message)

    async def work(session):
        return await cancel_series_occurrence(session, series_id, moment, reason, cancelled_by="cli")

    try:
        out = _run(_with_session(_database_of(config_path), work))
    except RequestError as err:
        fail(("SERIES_ID" + err.message[2:]) if err.message.startswith("id:") else err.message)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"cancelled the occurrence {out['start']} to {out['end']} of series {series_id} "
               f"({out['policy']} {out['kind']}) at {out['cancelled_at']}")


@maintenance.command("cancel-series")
@click.argument("series_id", type=click.IntRange(min=1, max=2**31 - 1))
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--reason", default="", help="Why it is cancelled.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def maintenance_cancel_series(series_id, config_path, reason, fmt) -> None:
    """Cancel recurring series SERIES_ID: it stays listed; no occurrence starting later excludes anything."""
    from collector import store
    from collector.api.maintenance import cancel_reason_from, series_record
    from collector.errors import RequestError

    try:
        reason = cancel_reason_from(reason, None)
    except RequestError as err:
        fail(err.message)

    async def work(session):
        row, cancelled = await store.cancel_maintenance_series(session, series_id, cancelled_by="cli", reason=reason)
        if row is None:
            return None, False
        _, cancellations = await store.maintenance_series(session, series_id)
        return series_record(row, cancellations, store.utcnow()), cancelled

    record, cancelled = _run(_with_session(_database_of(config_path), work))
    if record is None:
        fail(f"SERIES_ID: no maintenance series with id {series_id}")
    if not cancelled:
        fail(f"SERIES_ID: maintenance series {series_id} was already cancelled at {record['cancelled_at']}; "
             "a cancellation stands")
    if fmt == "json":
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"cancelled maintenance series {series_id}: {_series_line(record)}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def presets(fmt: str) -> None:
    """List the contract presets shipped with the package."""
    from collector.rules.policy import list_presets, load_policy

    policies = [load_policy(name) for name in list_presets()]
    if fmt == "json":
        click.echo(json.dumps([{"name": p.name, "components": p.components, "interval_seconds": p.interval,
                                "timezone": p.timezone, "target_percent": p.target_percent,
                                "maintenance_kinds": sorted(p.maintenance), "description": p.description,
                                "policy_hash": p.content_hash()} for p in policies], indent=2))
        return
    for p in policies:
        click.echo(f"{p.name:24} {', '.join(p.components):18} every {p.interval:g}s  {p.description}")


@main.command("import")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--results", required=True, type=click.Path(dir_okay=False, exists=True), help="JSON Lines of probe results.")
@click.option("--batch", default=5000, show_default=True, help="Rows per insert statement.")
def import_results(config_path: str, results: str, batch: int) -> None:
    """Import recorded results (JSON Lines, as `report --results` reads) into the collector's
    database, with a progress bar. Idempotent: importing the same file twice stores nothing twice."""
    from collector.rules.offline import InputError, read_results

    config = _load(config_path)
    checks = [c.name for c in config.checks]
    try:
        observations = read_results(results, components=checks or None)
    except InputError as err:
        fail(str(err))
    _run(_import(config, observations, batch))


async def _import(config, observations, batch: int) -> None:
    import hashlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from collector import store
    from collector.db import make_engine, make_sessionmaker
    from collector.migrate import upgrade_async

    await upgrade_async(config.database_url)
    engine = make_engine(config.database_url)
    now = datetime.now(timezone.utc)
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for o in observations:
        # a stable id from the content: re-importing the file is idempotent
        rid = hashlib.sha256(f"{o.agent}|{o.check}|{o.ts.isoformat()}|{o.ok}".encode()).hexdigest()[:40]
        by_agent.setdefault(o.agent, []).append({
            "result_id": f"import-{rid}", "check": o.check, "slot": o.ts, "started": o.ts, "ok": o.ok,
            "latency_ms": None, "status_code": None, "error": None if o.ok else "internal",
            "detail": "imported", "received_at": now, "degraded": o.degraded})
    accepted = duplicates = conflicts = 0
    try:
        async with make_sessionmaker(engine)() as session:
            await store.sync_agents(session, [(a, None) for a in by_agent])
            await session.commit()
        columns = [TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("import", total=len(observations))
            for agent, rows in by_agent.items():
                for i in range(0, len(rows), batch):
                    async with make_sessionmaker(engine)() as session:
                        outcome = await store.insert_results(session, agent, rows[i:i + batch])
                        await session.commit()
                    accepted += outcome.accepted
                    duplicates += outcome.duplicates
                    conflicts += len(outcome.conflicts)
                    progress.advance(task, len(rows[i:i + batch]))
    finally:
        await engine.dispose()
    click.echo(f"imported {accepted} results ({duplicates} already stored) from {len(by_agent)} agents")
    if conflicts:  # one vote per agent, check and slot: the first one stands
        click.echo(f"not imported: {conflicts} results of a slot their agent already has a result for", err=True)


def _resolve_policy(name: str, config_path: str | None, overrides: dict[str, Any]):
    from collector.rules.policy import PolicyError, load_policy

    if config_path:
        from collector.service import build_live_policies

        config = _load(config_path)
        try:
            configured = {lp.name: lp for lp in build_live_policies(config)}
        except ConfigError as err:
            fail(f"{config_path}: {err}")
        if name in configured:
            lp = configured[name]
            policy = lp.policy.with_overrides(**overrides) if overrides else lp.policy
            return policy, config, lp.expected_by_component
        fail(f"--policy: {name!r} is not a policy of {config_path} (policies: {', '.join(sorted(configured)) or 'none'}); "
             "leave out --config to apply a preset to a --results file")
    try:
        return load_policy(name, **overrides), None, None
    except PolicyError as err:
        fail(str(err))


def _overrides(target: float | None, commenced: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target is not None:
        out["target_percent"] = target
    if commenced is not None:
        out["commenced"] = commenced
    return out


def _read_inputs(results: str | None, maintenance: str | None, policy):
    from collector.rules.offline import InputError, read_maintenance, read_results

    try:
        observations = read_results(results, components=policy.components) if results else None
        announcements = read_maintenance(maintenance, kinds=list(policy.maintenance)) if maintenance else []
    except InputError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename}: {err.strerror}")
    return observations, announcements


def _emit(data: dict[str, Any], fmt: str, text_renderer, csv_renderer=None) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=_json_default))
    elif fmt == "csv" and csv_renderer is not None:
        click.echo(csv_renderer(data), nl=False)
    else:
        click.echo(text_renderer(data))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


@main.command()
@click.option("--policy", "policy_name", required=True, help="Preset name, policy YAML path, or a policy of --config.")
@click.option("--period", required=True,
              help="Calendar month YYYY-MM in the policy's time zone, or a range YYYY-MM..YYYY-MM (each month, "
                   "and the termination right over consecutive months).")
@click.option("--results", type=click.Path(dir_okay=False), help="JSON Lines of probe results (offline report).")
@click.option("--maintenance", type=click.Path(dir_okay=False), help="JSON Lines of maintenance announcements.")
@click.option("--commenced", help="When the service commenced (RFC 3339): a partial first cycle.")
@click.option("--target", type=float, help="Target availability in percent (required where the contract lost it).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Collector config: report from its database.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
def report(policy_name, period, results, maintenance, commenced, target, config_path, fmt) -> None:
    """SLA report for one month: availability, excluded maintenance, credit and claim deadline.
    With a range of months, each month's report and the termination right over them."""
    from collector.reporting import parse_period_range
    from collector.rules.offline import InputError, evaluate_offline
    from collector.rules.periods import month_bounds
    from collector.rules.policy import PolicyError
    from collector.rules.report import render_csv, render_text

    policy, config, expected = _resolve_policy(policy_name, config_path, _overrides(target, commenced))
    try:
        months = parse_period_range(period)
        for month in (months[0], months[-1]):
            month_bounds(month, policy.timezone)
    except ValueError as err:
        fail(f"--period: {err}")
    observations, announcements = _read_inputs(results, maintenance, policy)
    if ".." in period:
        _report_range(policy, config, expected, months, observations, announcements, fmt)
        return
    try:
        if observations is not None:
            data = evaluate_offline(policy, observations, period, announcements, expected_by_component=expected)
        else:
            if config is None:
                fail("give --results FILE for an offline report, or --config PATH to report from the collector's database")
            data = _run(_report_db(config, policy, period, announcements, expected))
    except (PolicyError, InputError, ValueError) as err:
        fail(str(err))
    _emit(data, fmt, render_text, render_csv)


def _report_range(policy, config, expected, months, observations, announcements, fmt) -> None:
    """`report --period A..B`: NexGen Service Level Addendum §4 (termination after three
    consecutive months below target) needs the months' verdicts together, offline as live."""
    from collector.reporting import render_range_csv, render_range_text, reports_over_range
    from collector.rules.offline import InputError
    from collector.rules.policy import PolicyError

    try:
        if observations is not None:
            data = reports_over_range(policy, observations, months, announcements, expected_by_component=expected)
        else:
            if config is None:
                fail("give --results FILE for an offline report, or --config PATH to report from the collector's database")
            data = _run(_report_range_db(config, policy, months, announcements, expected))
    except (PolicyError, InputError, ValueError) as err:
        fail(str(err))
    _emit(data, fmt, render_range_text, render_range_csv)


async def _report_range_db(config, policy, months, announcements, expected):
    from collector.db import make_engine, make_sessionmaker
    from collector.migrate import upgrade_async
    from collector.reporting import reports_over_range_from_db

    await upgrade_async(config.database_url)
    engine = make_engine(config.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await reports_over_range_from_db(session, policy, months, extra_maintenance=announcements,
                                                    expected_by_component=expected)
    finally:
        await engine.dispose()


async def _report_db(config, policy, period, announcements, expected):
    from collector.db import make_engine, make_sessionmaker
    from collector.migrate import upgrade_async
    from collector.reporting import report_from_db

    await upgrade_async(config.database_url)  # a database not made yet reports no evidence, not a traceback
    engine = make_engine(config.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await report_from_db(session, policy, period, extra_maintenance=announcements,
                                        expected_by_component=expected)
    finally:
        await engine.dispose()


@main.group()
def evidence() -> None:
    """Evidence bundles for offline verification (docs/evidence.md): `uptime-verify FILE` checks them."""


@evidence.command("export")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("--policy", "policy_name", required=True, help="A policy of --config.")
@click.option("--period", help="Calendar month YYYY-MM in the policy's time zone (a month's report).")
@click.option("--claim-start", help="Claimed outage start (RFC 3339 with offset): a claim's bundle instead.")
@click.option("--claim-end", help="Claimed outage end (RFC 3339 with offset).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the bundle (JSON).")
def evidence_export(config_path: str, policy_name: str, period: str | None, claim_start: str | None,
                    claim_end: str | None, output: str) -> None:
    """Write the evidence bundle of POLICY's report for PERIOD (or of a claimed outage checked
    against the evidence, with --claim-start and --claim-end): the report or claim, the signed
    batches and maintenance versions it rests on, the agents' keys, and their proofs in the
    collector's log."""
    import os
    from datetime import datetime, timezone

    from collector.api.log import EvidenceLog, load_keeper, log_key_path, log_origin
    from collector.rules.periods import month_bounds
    from evidence.keys import BadKey, load_private_key

    claim = claim_start is not None or claim_end is not None
    if claim == (period is not None):
        fail("--period: give either --period (a month's report) or --claim-start and --claim-end (a claim)")
    policy, config, expected = _resolve_policy(policy_name, config_path, {})
    if claim:
        if claim_start is None or claim_end is None:
            fail(f"--claim-{'start' if claim_start is None else 'end'}: required with the other one")
        start_at, end = _cli_ts(claim_start, "--claim-start"), _cli_ts(claim_end, "--claim-end")
        if end <= start_at:
            fail("--claim-end: must be after --claim-start")
    else:
        try:
            _, end = month_bounds(period, policy.timezone)
        except ValueError as err:
            fail(f"--period: {err}")
    key_file = log_key_path(config)
    try:
        # the collector's own key: a bundle signed by any other would verify with no one's
        key = load_private_key(key_file)
    except BadKey as err:
        fail(f"evidence.log_key_file: {err}")
    now = datetime.now(timezone.utc).replace(microsecond=0)

    async def work(session):
        keeper = await load_keeper(session, EvidenceLog(log_origin(config), key))
        # a month (or claim) not over yet is judged as of now, as the collector does
        as_of = now if end > now else None
        if claim:
            return keeper.export_claim(policy, start_at, end, now=now, as_of=as_of, expected_by_component=expected)
        return keeper.export_report(policy, period, now=now, as_of=as_of, expected_by_component=expected)

    try:
        bundle = _run(_with_session(config.database_url, work))
    except ValueError as err:
        fail(str(err))
    text = json.dumps(bundle, ensure_ascii=False, separators=(",", ":"))
    tmp = f"{output}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:  # written whole, then renamed into place
            f.write(text)
        os.replace(tmp, output)
    except OSError as err:
        fail(f"-o: cannot write {output}: {err.strerror or err}")
    click.echo(f"wrote {output}: {len(bundle['batches'])} batches, {len(bundle['maintenance'])} maintenance records, "
               f"{len(bundle['series'])} recurring maintenance series, log size {bundle['proof']['tree_size']}", err=True)


@main.command("verify-claim")
@click.option("--policy", "policy_name", required=True, help="Preset name, policy YAML path, or a policy of --config.")
@click.option("--start", required=True, help="Claimed outage start (RFC 3339 with offset).")
@click.option("--end", required=True, help="Claimed outage end (RFC 3339 with offset).")
@click.option("--results", type=click.Path(dir_okay=False), help="JSON Lines of probe results.")
@click.option("--maintenance", type=click.Path(dir_okay=False), help="JSON Lines of maintenance announcements.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Collector config: check against its database.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def verify_claim_cmd(policy_name, start, end, results, maintenance, config_path, fmt) -> None:
    """Check a claimed outage against the verified outage windows (Nexcess: Claimed vs Verified Outage)."""
    from collector.reporting import claim_from_observations
    from collector.rules.report import render_claim_text

    policy, config, expected = _resolve_policy(policy_name, config_path, {})
    claim_start = _cli_ts(start, "--start")
    claim_end = _cli_ts(end, "--end")
    if claim_end <= claim_start:
        fail("--end: must be after --start")
    observations, announcements = _read_inputs(results, maintenance, policy)
    if observations is not None:
        data = claim_from_observations(policy, observations, claim_start, claim_end, announcements,
                                       expected_by_component=expected)
    else:
        if config is None:
            fail("give --results FILE, or --config PATH to check against the collector's database")
        data = _run(_claim_db(config, policy, claim_start, claim_end, announcements, expected))
    _emit(data, fmt, render_claim_text)


async def _claim_db(config, policy, start, end, announcements, expected):
    from collector.db import make_engine, make_sessionmaker
    from collector.migrate import upgrade_async
    from collector.reporting import claim_from_db

    await upgrade_async(config.database_url)
    engine = make_engine(config.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await claim_from_db(session, policy, start, end, extra_maintenance=announcements,
                                       expected_by_component=expected)
    finally:
        await engine.dispose()


def _cli_ts(value: str, option: str) -> datetime:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: {value!r} is not an RFC 3339 timestamp")
    if moment.tzinfo is None:
        fail(f"{option}: {value!r} has no UTC offset (write e.g. {value}Z)")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        fail(f"{option}: {value!r} is out of range")


@main.group()
def notify() -> None:
    """Try the configured notification sinks (webhooks and Apprise URLs)."""


@notify.command("test")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
def notify_test(name: str, config_path: str) -> None:
    """Send a test message through the notifier NAME now and say whether it was delivered."""
    from collector.notify import Deliverer, shown_url
    from protocol.redact import redact_text, redact_url

    config = _load(config_path)
    sinks = {s.name: s for s in config.notifications}
    if name not in sinks:
        fail(f"NAME: no notifier {name!r} in {config_path} (notifications: {', '.join(sinks) or 'none'})")
    sink = sinks[name]
    payload: dict[str, Any] = {"event": "test", "sink": name, "sent_at": datetime.now(timezone.utc)}
    if config.public_url:  # a sink is no policy: the link goes to the status page
        payload["status_url"] = config.public_url.rstrip("/") + "/"

    async def send() -> str | None:
        deliverer = Deliverer(None, [sink])
        try:
            return await deliverer.send_now(sink, payload)
        finally:
            await deliverer.close()

    # never a password or token of the sink's URLs on the terminal (protocol/redact.py)
    targets = [shown_url(u) for u in sink.urls] if sink.kind == "apprise" else [redact_url(sink.url or "")]
    error = asyncio.run(send())
    if error is not None:
        fail(f"notifications.{name}: not delivered: {redact_text(error)}")
    click.echo(f"delivered a test message through {name} ({sink.kind}) to {', '.join(targets)}")


@main.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
def check_config(config_path: str) -> None:
    """Validate a collector config (keys, checks, presets, policies) without starting anything."""
    from collector.service import build_live_policies

    config = _load(config_path)
    try:
        live = build_live_policies(config)
    except ConfigError as err:
        fail(f"{config_path}: {err}")
    checks = {c.name for c in config.checks}
    contracts = [lp.policy for lp in live if lp.policy.name not in checks]
    without_token = [a.id for a in config.agents if a.token_hash is None]
    click.echo(f"{config_path}: valid")
    click.echo(f"  listen      {config.listen.host}:{config.listen.port}")
    click.echo(f"  database    {config.database_url.split('://', 1)[0]}"
               + (f" {config.database_url.split('///', 1)[1]}" if config.database_url.startswith("sqlite") else ""))
    click.echo(f"  agents      {len(config.agents)}" + (f" ({', '.join(without_token)} without a token: register "
                                                        "them with `agents add`)" if without_token else ""))
    click.echo(f"  checks      {len(config.checks)}: {', '.join(sorted(checks)) or 'none'}")
    click.echo(f"  policies    {len(contracts)}: " + (", ".join(f"{p.name} ({p.target_percent} %)" if p.target_percent
                                                             is not None else p.name for p in contracts) or "none"))
    click.echo(f"  admin       {'token set' if config.admin_token else 'no admin_token: admin actions are refused'}")


@main.command("alert-rules")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Collector YAML config.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
def alert_rules(config_path: str, output: str | None) -> None:
    """Print Prometheus rules for every contract policy of the config: multi-window,
    multi-burn-rate alerts on its downtime budget (check them with `promtool check rules`)."""
    from collector.alert_rules import render
    from collector.service import build_live_policies

    config = _load(config_path)
    try:
        live = build_live_policies(config)
    except ConfigError as err:
        fail(f"{config_path}: {err}")
    checks = {c.name for c in config.checks}
    text = render([lp.policy for lp in live if lp.policy.name not in checks])
    if output:
        tmp = f"{output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)  # nothing half-written
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
