"""`uptime-collector demo`: the whole path once, in about half a minute, with no configuration.

A real collector (aiohttp, SQLite in a temporary folder, migrations, live evaluation) and six real
agents (HTTP probes over loopback, spools, shipping) run in this process against a real HTTP target,
with time compressed through configuration only: 2-second polls and a 4-second outage rule.
The demo stops the target's listener, starts it again, and checks that the verified window is
exactly [first failed round, first round after recovery).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console

from agent import Agent
from agent import parse_config as parse_agent_config
from protocol.timestamps import parse_rfc3339, slot_of
from collector.app import create_app
from collector.config import parse_config
from collector.evaluator import WindowEvent
from collector.service import CollectorState

AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
INTERVAL = 2.0  # seconds between polls (a real contract: 60 s or 6 minutes)
MIN_DURATION = 4.0  # failed rounds must cover this long (NEXON: 5 minutes; Haivision: 12 minutes)
HEALTHY_ROUNDS = 3
DOWN_ROUNDS = 5
# The target is stopped and started this long after a slot boundary, when that slot's probes are
# done, so the first failed (and first recovered) round is exactly the next slot.
OFFSET_IN_SLOT = 0.7
# After the outage is resolved the collector stays up this long so that a person can open the
# status page and the API; the whole demo still ends within about a minute.
LINGER = 20.0


def hhmmss(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S")


class Target:
    """A real HTTP service on loopback whose listener is stopped and started again."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._ok)
        self.runner = web.AppRunner(app, access_log=None)
        self.site: web.TCPSite | None = None
        self.port = 0

    async def _ok(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(self) -> None:
        if self.site is None and not self.port:
            await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()
        if not self.port:
            self.port = self.runner.addresses[0][1]

    async def stop_listening(self) -> None:
        assert self.site is not None
        await self.site.stop()
        self.site = None

    async def close(self) -> None:
        await self.runner.cleanup()


class RoundPrinter:
    """Prints one line per round once all six agents reported it, the way a person follows it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rounds: dict[str, dict[str, dict[str, Any]]] = {}

    def on_result(self, result: dict[str, Any]) -> None:
        by_agent = self.rounds.setdefault(result["slot"], {})
        by_agent[result["agent"]] = result
        if len(by_agent) == len(AGENTS):
            slot = parse_rfc3339(result["slot"])
            marks = "".join("[green]✔[/]" if by_agent[a]["ok"] else "[red]✘[/]" for a in AGENTS)
            failed = [r for r in by_agent.values() if not r["ok"]]
            if not failed:
                verdict = "[green]UP[/]      (6/6 agents succeeded)"
            elif len(failed) == len(AGENTS):
                verdict = f"[red]FAILED[/]  (6/6 agents failed: {failed[0]['error']})"
            else:
                verdict = f"[yellow]UP[/]      ({len(failed)}/6 failed: one vantage point is not an outage)"
            self.console.print(f"  round {hhmmss(slot)}  web  {marks}  {verdict}")
            del self.rounds[result["slot"]]


async def run_demo(duration: float = 60.0, keep_serving: bool = False) -> int:
    console = Console(highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="uptime-demo-"))
    target = Target()
    await target.start()
    tokens = {agent: secrets.token_urlsafe(24) for agent in AGENTS}
    config = parse_config(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "database_url": f"sqlite+aiosqlite:///{workdir / 'collector.sqlite'}",
            "evaluation": {"interval": "250ms", "grace": "1s"},
            "agents": [{"id": a, "token": t} for a, t in tokens.items()],
            "checks": [
                {
                    "name": "web",
                    "type": "http",
                    "interval": INTERVAL,
                    "url": f"http://127.0.0.1:{target.port}/",
                    "timeout": "1s",
                    "expected_status": [200],
                    "outage": {"quorum": "all", "min_duration": MIN_DURATION},
                }
            ],
        },
        "demo",
    )
    events: asyncio.Queue[WindowEvent] = asyncio.Queue()
    state = CollectorState.create(config, on_event=events.put_nowait)
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    printer = RoundPrinter(console)
    agents = [
        Agent(
            parse_agent_config(
                {
                    "agent": {"id": a},
                    "collector": {"url": base, "token": tokens[a], "flush_interval": "200ms", "heartbeat_interval": "5s"},
                    "metrics": {"listen": "127.0.0.1:0"},
                    "spool": {"path": str(workdir / "spool-{agent_id}.sqlite")},
                    # The demo's target is on 127.0.0.1, which the SSRF guard refuses for checks
                    # a collector assigns: these agents opt out, as an internal monitor would.
                    "guard": {"block_private": False},
                }
            ),
            on_result=printer.on_result,
        )
        for a in AGENTS
    ]
    deadline = asyncio.get_running_loop().time() + duration
    code = 1
    try:
        console.print("[bold]uptime demo[/]: one collector, six agents, one HTTP target; polls every "
                      f"{INTERVAL:g} s, an outage needs all six agents failing for {MIN_DURATION:g} s.")
        console.print(f"  status page    {base}/")
        console.print(f"  collector API  {base}/api/v1/outages")
        console.print(f"  metrics        {base}/metrics")
        console.print(f"  target         http://127.0.0.1:{target.port}/   (data in {workdir})")
        for agent in agents:
            await agent.start()
        console.print(f"  agents         {', '.join(AGENTS)} (metrics on ports "
                      f"{', '.join(str(a.metrics_port) for a in agents)})\n")
        # Ctrl-C stops the script, not the event loop, so that agents and collector close cleanly
        script = asyncio.ensure_future(_script(console, target, events, deadline, base, keep_serving))
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, script.cancel)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
        try:
            code = await script
        except asyncio.CancelledError:
            if not script.cancelled():
                raise
            console.print("\ndemo stopped")
            code = 130
        finally:
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass
    finally:
        for agent in agents:
            await agent.stop(timeout=1)
        await runner.cleanup()
        await target.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return code


async def _sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()))


async def _next_event(events: asyncio.Queue, kind: str, deadline: float) -> WindowEvent | None:
    loop = asyncio.get_running_loop()
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return None
        try:
            event = await asyncio.wait_for(events.get(), timeout=left)
        except asyncio.TimeoutError:
            return None
        if event.kind == kind:
            return event


async def _script(console: Console, target: Target, events: asyncio.Queue, deadline: float, base: str,
                  keep_serving: bool = False) -> int:
    step = timedelta(seconds=INTERVAL)
    now = datetime.now(timezone.utc)
    first_slot = slot_of(now, INTERVAL) + step
    down_at = first_slot + HEALTHY_ROUNDS * step + timedelta(seconds=OFFSET_IN_SLOT)
    await _sleep_until(down_at)
    await target.stop_listening()
    expected_start = slot_of(down_at, INTERVAL) + step
    console.print(f"[bold red]>>> {hhmmss(datetime.now(timezone.utc))} target taken down[/] "
                  f"(its listener is closed: connections are refused)")
    up_at = expected_start + (DOWN_ROUNDS - 1) * step + timedelta(seconds=OFFSET_IN_SLOT)
    verified = await _next_event(events, "verified", asyncio.get_running_loop().time() + (up_at - datetime.now(timezone.utc)).total_seconds())
    if verified is not None:
        console.print(f"[bold red]!!! outage VERIFIED[/] for web since {hhmmss(verified.start)}: all six agents "
                      f"failed in consecutive rounds covering {MIN_DURATION:g} s")
    await _sleep_until(up_at)
    await target.start()
    expected_end = slot_of(up_at, INTERVAL) + step
    console.print(f"[bold green]>>> {hhmmss(datetime.now(timezone.utc))} target back up[/]")
    if verified is None:
        verified = await _next_event(events, "verified", deadline)
    resolved = await _next_event(events, "resolved", deadline)
    if resolved is None:
        console.print("[red]the outage was not resolved before the demo's time ran out[/]")
        return 1
    minutes = (resolved.end - resolved.start).total_seconds()
    console.print(f"[bold green]=== outage RESOLVED[/]: window [{hhmmss(resolved.start)}, {hhmmss(resolved.end)}) "
                  f"= {minutes:g} s of verified downtime")
    rounds = resolved.evidence.get("rounds", [])
    if rounds:
        console.print(f"    evidence: {len(rounds)} rounds, each with every agent failed")
    ok = resolved.start == expected_start and resolved.end == expected_end
    if ok:
        console.print(f"    [green]✔ matches what happened[/]: first failed round {hhmmss(expected_start)}, "
                      f"first round after recovery {hhmmss(expected_end)}")
    else:
        console.print(f"    [red]✘ expected [{hhmmss(expected_start)}, {hhmmss(expected_end)})[/]")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/outages") as resp:
            stored = (await resp.json())["outages"]
        async with http.get(f"{base}/metrics") as resp:
            metric_lines = [line for line in (await resp.text()).splitlines()
                            if line.startswith("uptime_collector_outage_events_total")]
    console.print(f"\nGET {base}/api/v1/outages →")
    for w in stored:
        console.print(f"    policy={w['policy']} start={w['start']} end={w['end']} minutes={w['minutes']}")
    console.print(f"GET {base}/metrics →")
    for line in metric_lines:
        console.print(f"    {line}")
    if keep_serving:
        console.print(f"\nThe status page shows this outage with its evidence: [bold]{base}/[/] "
                      "(serving until Ctrl-C)")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until Ctrl-C cancels it
    linger = max(0.0, min(LINGER, deadline - asyncio.get_running_loop().time()))
    if linger >= 1:
        console.print(f"\nThe status page shows this outage with its evidence: [bold]{base}/[/] "
                      f"(the demo ends in {linger:.0f} s; Ctrl-C ends it now)")
        sys.stdout.flush()
        await asyncio.sleep(linger)
    sys.stdout.flush()
    return 0 if ok else 1
