"""Checks assigned by the collector (GET /api/v1/assignments), when the config lists none.

Fetched at start, then polled with If-None-Match so an unchanged set costs a 304. The last good
set is saved next to the spool (mode 0600: it holds the checks' credentials) and used when the
collector cannot be reached at start, so an agent restarted during a collector outage keeps
probing what it probed before.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agent.collector_client import CollectorClient
from protocol.checks import Check, ConfigError, parse_checks

log = logging.getLogger(__name__)

ApplyChecks = Callable[[list[Check]], Awaitable[None]]


class Assignments:
    def __init__(self, client: CollectorClient, cache_path: Path, *, interval: float, apply: ApplyChecks):
        self._client = client
        self.cache_path = Path(cache_path)
        self._interval = interval
        self._apply = apply
        self.etag: str | None = None
        self._task: asyncio.Task | None = None
        self._unreachable = False

    async def load_initial(self) -> bool:
        """1. read the cached set (and its ETag); 2. ask the collector, sending that ETag;
        3. apply the collector's set, or on 304 or failure the cached one. True if any set was applied."""
        cached = self._read_cache()
        if cached is not None:
            self.etag = cached[0]
        changed = await self.poll_once()
        if changed:
            return True
        if cached is not None:
            etag, checks = cached
            if self._unreachable:
                log.warning(
                    "collector unreachable at start: using the %d checks saved in %s", len(checks), self.cache_path
                )
            await self._apply(checks)
            return True
        if self._unreachable:
            log.warning("collector unreachable at start and no saved checks: probing nothing until it answers")
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"assignments-{self._client.agent_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("polling assignments failed unexpectedly")

    async def poll_once(self) -> bool:
        """Ask for the assignments once; apply and save a new set. True if a new set was applied."""
        try:
            reply = await self._client.get_assignments(self.etag)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if not self._unreachable:
                log.warning("cannot fetch assignments from %s: %s", self._client.base_url, exc or type(exc).__name__)
            self._unreachable = True
            return False
        if self._unreachable:
            log.info("assignments: collector reachable again")
        self._unreachable = False
        if reply.status == 304:
            return False
        if reply.status != 200:
            level = logging.ERROR if reply.status in (401, 403) else logging.WARNING
            log.log(level, "assignments: collector answered %d: %s; keeping the current checks",
                    reply.status, reply.error_message())
            return False
        raw = reply.body.get("checks") if isinstance(reply.body, dict) else None
        if not isinstance(raw, list):
            log.error("assignments: answer has no list of checks; keeping the current checks")
            return False
        try:
            checks = parse_checks(raw)
        except ConfigError as exc:
            log.error("assignments: collector sent invalid checks, keeping the current ones: %s",
                      "; ".join(f"{path}: {message}" for path, message in exc.problems))
            return False
        new_etag = reply.headers.get("etag")
        await self._apply(checks)
        self.etag = new_etag
        self._write_cache(new_etag, raw)
        return True

    def _read_cache(self) -> tuple[str | None, list[Check]] | None:
        try:
            data = json.loads(self.cache_path.read_text())
            return data.get("etag"), parse_checks(data["checks"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            log.warning("ignoring unreadable saved assignments %s: %s", self.cache_path, exc)
            return None

    def _write_cache(self, etag: str | None, raw: list[Any]) -> None:
        """Atomically: a crash mid-write leaves the previous good set, never half a file. Readable
        by the agent's user only: the checks hold their credentials in full."""
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o600)  # an older .tmp keeps its mode through O_CREAT
                out.write(json.dumps({"etag": etag, "checks": raw}, indent=1))
            os.replace(tmp, self.cache_path)
        except OSError as exc:
            log.warning("cannot save assignments to %s: %s", self.cache_path, exc)
