"""`uptime-agent`: run an agent, or check its configuration.

Configuration problems print `<file>: <key path>: <what is wrong>` and exit with status 2,
without a traceback.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from agent.config import ENV_AGENT_ID, ConfigError, load_config, read_config_file
from protocol.durations import format_duration, format_size
from protocol.redact import redact_url

EXIT_CONFIG = 2  # like a usage error: the operator must fix the input
EXIT_RUNTIME = 1

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
def run(config_path: str, agent_id: str | None, log_level: str) -> None:
    """Run the agent until Ctrl-C or SIGTERM."""
    _setup_logging(log_level)
    config = _load_or_exit(config_path, agent_id)
    try:
        asyncio.run(_run(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass
    except ConfigError as exc:
        click.echo(exc.with_source(config_path).render(), err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:  # e.g. the metrics port is taken, the spool directory is not writable
        log.error("cannot start: %s", exc)
        sys.exit(EXIT_RUNTIME)


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
def check_config(config_path: str, agent_id: str | None) -> None:
    """Validate a config file and print what the agent would do."""
    config = _read_or_exit(config_path)
    from agent.config import resolve

    try:
        resolve(config, agent_id=agent_id)
        runtime_problem = None
    except ConfigError as exc:
        runtime_problem = exc
    click.echo(f"{config_path}: OK")
    agent_id_text = agent_id or os.environ.get(ENV_AGENT_ID) or config.agent.id or "(not set)"
    click.echo(f"agent:     {agent_id_text}")
    click.echo(f"collector: {config.collector.url} (batch {config.collector.batch_size}, "
               f"flush {format_duration(config.collector.flush_interval)}, "
               f"heartbeat {format_duration(config.collector.heartbeat_interval)})")
    click.echo(f"metrics:   {config.metrics.listen or 'off'}")
    click.echo(f"spool:     {config.spool.path} (max {format_size(config.spool.max_bytes)}, "
               f"{format_duration(config.spool.max_age)})")
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


def _load_or_exit(path: str, agent_id: str | None):
    try:
        return load_config(path, agent_id=agent_id)
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
