"""`uptime-agent`: run an agent, check its configuration, or show its signing key.

Configuration problems print `<file>: <key path>: <what is wrong>` and exit with status 2,
without a traceback.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys

import click

from agent.config import (
    ENV_AGENT_ID,
    ENV_METRICS_LISTEN,
    OPTION_METRICS_LISTEN,
    ConfigError,
    load_config,
    read_config_file,
)
from protocol.durations import format_duration, format_size
from protocol.redact import redact_url

EXIT_CONFIG = 2  # like a usage error: the operator must fix the input
EXIT_RUNTIME = 1
METRICS_LISTEN_HELP = (
    "serve /metrics and /healthz here instead of metrics.listen (overrides env UPTIME_AGENT_METRICS_LISTEN, "
    "which overrides the file); port 0 picks a free port, \"\" turns it off. For several agents on one host "
    "from one config file."
)

log = logging.getLogger("agent")


@click.group(name="uptime-agent", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Probe agent of the uptime monitor: probes checks on aligned slots and ships the results."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--id", "agent_id", help="agent id (overrides env UPTIME_AGENT_ID and agent.id)")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(OPTION_METRICS_LISTEN, "metrics_listen", metavar="HOST:PORT", help=METRICS_LISTEN_HELP)
def run(config_path: str, agent_id: str | None, log_level: str, metrics_listen: str | None) -> None:
    """Run the agent until Ctrl-C or SIGTERM."""
    _setup_logging(log_level)
    config = _load_or_exit(config_path, agent_id, metrics_listen)
    try:
        _run_loop(_run(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass
    except ConfigError as exc:
        click.echo(exc.with_source(config_path).render(), err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:  # e.g. the metrics port is taken, the spool directory is not writable
        hint = ""
        if exc.errno == errno.EADDRINUSE and config.metrics.listen:
            # the usual cause: a second agent on this host from the same config file
            hint = (f" (metrics.listen {config.metrics.listen}: give this agent another with "
                    f"{OPTION_METRICS_LISTEN} HOST:PORT or env {ENV_METRICS_LISTEN})")
        log.error("cannot start: %s%s", exc, hint)
        sys.exit(EXIT_RUNTIME)


def _run_loop(main_coro) -> None:
    """Run the agent on uvloop where it is installed (Linux, macOS): libuv's loop costs less per
    probe, timer and socket than asyncio's selector loop (bench/agent_variant.py --uvloop).
    Without it (an import failure, e.g. Windows) asyncio's own loop runs the same code."""
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio (uvloop not available)")
        asyncio.run(main_coro)
        return
    log.info("event loop: uvloop %s", uvloop.__version__)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main_coro)


async def _run(config) -> None:
    from agent.runner import Agent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    agent = Agent(config)
    await agent.start()
    try:
        await stop.wait()
        log.info("stopping (signal received)")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await agent.stop()


@main.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--id", "agent_id", help="agent id, as `run --id` would get it")
@click.option(OPTION_METRICS_LISTEN, "metrics_listen", metavar="HOST:PORT", help="as `run " + OPTION_METRICS_LISTEN
              + "` would get it")
def check_config(config_path: str, agent_id: str | None, metrics_listen: str | None) -> None:
    """Validate a config file and print what the agent would do."""
    config = _read_or_exit(config_path)
    from agent.config import override_metrics_listen, resolve

    listen_from = ""
    if metrics_listen is not None:
        listen_from = f" (from {OPTION_METRICS_LISTEN})"
    elif os.environ.get(ENV_METRICS_LISTEN):
        listen_from = f" (from env {ENV_METRICS_LISTEN})"
    try:
        config = override_metrics_listen(config, metrics_listen)
    except ConfigError as exc:
        click.echo(exc.with_source(config_path).render(), err=True)
        sys.exit(EXIT_CONFIG)

    try:
        resolve(config, agent_id=agent_id, metrics_listen=config.metrics.listen)  # already overridden
        runtime_problem = None
    except ConfigError as exc:
        runtime_problem = exc
    click.echo(f"{config_path}: OK")
    agent_id_text = agent_id or os.environ.get(ENV_AGENT_ID) or config.agent.id or "(not set)"
    click.echo(f"agent:     {agent_id_text}")
    click.echo(f"collector: {config.collector.url} (batch {config.collector.batch_size}, "
               f"flush {format_duration(config.collector.flush_interval)}, "
               f"heartbeat {format_duration(config.collector.heartbeat_interval)})")
    click.echo(f"metrics:   {config.metrics.listen or 'off'}{listen_from}")
    click.echo(f"spool:     {config.spool.path} (max {format_size(config.spool.max_bytes)}, "
               f"{format_duration(config.spool.max_age)})")
    if runtime_problem is None or not any(path == "agent.id" for path, _ in runtime_problem.problems):
        named = config.model_copy(update={"agent": config.agent.model_copy(update={"id": agent_id_text})})
        key_path = named.key_path()
        click.echo(f"key:       {key_path}" + ("" if key_path.exists() else " (made at first start)"))
    if not config.checks:
        click.echo(f"checks:    from the collector, GET {config.collector.url}/api/v1/assignments "
                   f"every {format_duration(config.collector.assignments_interval)}")
    else:
        click.echo(f"checks:    {len(config.checks)} local")
        for check in config.checks:
            click.echo(f"  {check.name:<20} {check.type:<7} every {format_duration(check.interval):<6} "
                       f"timeout {format_duration(check.timeout):<6} {_target(check)}")
    guarded = config.guard.applies(assigned=not config.checks)
    click.echo(f"guard:     {'on' if guarded else 'off'} for HTTP, journey, TCP and DNS checks"
               + (f" (allowed: {', '.join(config.guard.allow)})" if guarded and config.guard.allow else ""))
    if runtime_problem is not None:
        click.echo("to run, still needed:", err=True)
        for path, message in runtime_problem.problems:
            click.echo(f"  {path}: {message}", err=True)


@main.group()
def key() -> None:
    """The agent's signing key (Ed25519): every batch it ships is signed with it."""


@key.command("show")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--id", "agent_id", help="agent id, as `run --id` would get it")
def key_show(config_path: str, agent_id: str | None) -> None:
    """Print the public key to register with the collector, and its key id. Makes the key file
    (agent.key_file, default agent-<id>.key beside the spool) if there is none yet."""
    from agent.config import AGENT_ID_RE
    from agent.shipper import load_agent_key
    from evidence.keys import BadKey
    from evidence.keys import key_id as key_id_of
    from evidence.keys import public_key_text

    config = _read_or_exit(config_path)
    # the key id depends on the agent id, so it is needed here as for `run`; the token is not
    new_id = agent_id or os.environ.get(ENV_AGENT_ID) or config.agent.id
    if not new_id:
        click.echo(f"{config_path}: agent.id: not set: give agent.id, --id or env {ENV_AGENT_ID}", err=True)
        sys.exit(EXIT_CONFIG)
    if not AGENT_ID_RE.match(new_id):
        click.echo(f"{config_path}: agent.id: invalid agent id {new_id!r}: use 1-64 of A-Z a-z 0-9 . _ -", err=True)
        sys.exit(EXIT_CONFIG)
    config = config.model_copy(update={"agent": config.agent.model_copy(update={"id": new_id})})
    path = config.key_path()
    try:
        private, made = load_agent_key(path)
    except BadKey as exc:
        click.echo(f"{config_path}: agent.key_file: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if made:
        click.echo(f"made a new key in {path} (mode 0600)", err=True)
    click.echo(f"agent:      {new_id}")
    click.echo(f"key_file:   {path}")
    click.echo(f"public_key: {public_key_text(private)}")
    click.echo(f"key_id:     {key_id_of(new_id, private)}")


def _target(check) -> str:
    """What a check probes, in one line (credentials redacted)."""
    if check.type == "http":
        return f"{check.method} {redact_url(check.url)}"
    if check.type == "icmp":
        return f"count {check.count}, {check.host}"
    if check.type == "tcp":
        tls = " tls" if check.tls else f" starttls {check.starttls}" if check.starttls else ""
        return f"{check.host}:{check.port}{tls}"
    if check.type == "dns":
        return f"{check.query} {check.record} at {check.server or 'the system resolver'}"
    return f"{len(check.steps)} steps, first {check.steps[0].method} {redact_url(check.steps[0].url)}"


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML file: an agent config with checks:, or a file of checks: alone")
@click.option("--check", "names", multiple=True, metavar="NAME", help="probe only this check (may be repeated)")
@click.option("--format", "output", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="text for people, json (an array, one object per check) for tools")
@click.option("--id", "agent_id", help="agent id named in the probes' User-Agent (default agent.id, else 'probe')")
def probe(config_path: str, names: tuple[str, ...], output: str, agent_id: str | None) -> None:
    """Run the configured checks once, now, and print each result: its phases, the reason of a
    failure and, for a journey, every step. Exit 0 when all succeed, 1 when one fails, 2 on a
    config error."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    checks, guard, configured_id = _probe_targets(config_path)
    if names:
        known = {check.name for check in checks}
        unknown = [name for name in names if name not in known]
        if unknown:
            click.echo(f"{config_path}: --check: no check named {', '.join(map(repr, unknown))} "
                       f"(checks: {', '.join(sorted(known))})", err=True)
            sys.exit(EXIT_CONFIG)
        checks = [check for check in checks if check.name in names]
    from agent.probe_report import render_json, render_text, run_checks

    outcomes = asyncio.run(run_checks(checks, agent_id=agent_id or configured_id or "probe", guard=guard))
    if output == "json":
        click.echo(render_json(checks, outcomes))
    else:
        click.echo(render_text(checks, outcomes))
    sys.exit(0 if all(outcome.ok for outcome in outcomes) else EXIT_RUNTIME)


def _probe_targets(path: str):
    """(checks, guard, agent id) of a file for `probe`: an agent config, or `checks:` alone."""
    import yaml

    from agent.config import parse_checks
    from agent.probers.guard import AddressGuard
    from protocol.checks import ConfigError as ChecksError

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        click.echo(f"{path}: cannot read: {exc.strerror}", err=True)
        sys.exit(EXIT_CONFIG)
    except yaml.YAMLError:
        data = None  # read_config_file says where the YAML is broken
    if isinstance(data, dict) and set(data) == {"checks"}:
        try:
            checks = parse_checks(data["checks"])
        except ChecksError as exc:
            click.echo(exc.with_source(path).render(), err=True)
            sys.exit(EXIT_CONFIG)
        if not checks:
            click.echo(f"{path}: checks: none to probe", err=True)
            sys.exit(EXIT_CONFIG)
        return checks, None, None
    config = _read_or_exit(path)
    if not config.checks:
        click.echo(f"{path}: checks: none in this file (this agent gets them from the collector); list them "
                   "under checks: to probe them", err=True)
        sys.exit(EXIT_CONFIG)
    guard = AddressGuard(config.guard.networks()) if config.guard.applies(assigned=False) else None
    return list(config.checks), guard, config.agent.id


def _read_or_exit(path: str):
    try:
        return read_config_file(path)
    except ConfigError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(EXIT_CONFIG)


def _load_or_exit(path: str, agent_id: str | None, metrics_listen: str | None = None):
    try:
        return load_config(path, agent_id=agent_id, metrics_listen=metrics_listen)
    except ConfigError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(EXIT_CONFIG)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    # APScheduler logs every job run at INFO; the agent logs what matters itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
