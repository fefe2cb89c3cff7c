"""The front page of a large fleet, computed once for all its readers.

A page of hundreds of services costs a noticeable part of a second to assemble and render, and
every reader's browser reloads it every minute. Past FULL_BARS_MAX services the rendered page is
kept for FRESH seconds and served to everyone who asks meanwhile; after that, for up to STALE
seconds, the kept page is still served while one fresh one is computed in the background
(stale-while-revalidate, RFC 5861's idea), so that no reader waits for the computation. Every page
says when it was computed ("As of ..."), so a reader sees how old it is. Small pages are computed
for every request, as before: they are cheap, and what was just posted shows at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable

__all__ = ["PageCache", "Kept"]

log = logging.getLogger("uptime.collector.status")

FRESH = 5.0     # seconds a kept page is served as it is
STALE = 60.0    # seconds a kept page may be served while a fresh one is computed


@dataclass
class Kept:
    body: bytes
    headers: dict[str, str]
    status: int
    made: float                   # time.monotonic() when computed
    keep: bool = True             # False: served to this request only (a small page, an error)


@dataclass
class PageCache:
    fresh: float = FRESH
    stale: float = STALE
    kept: dict[Hashable, Kept] = field(default_factory=dict)
    running: dict[Hashable, asyncio.Task] = field(default_factory=dict)

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[Kept]]) -> Kept | None:
        """The kept page for `key` if fresh; a stale one while a fresh one is computed; else
        the page `compute` returns (kept for the next readers when its `keep` says so). None
        only when the computation failed."""
        now = time.monotonic()
        kept = self.kept.get(key)
        if kept is not None and now - kept.made < self.fresh:
            return kept
        if kept is not None and now - kept.made < self.stale:
            if key not in self.running:
                self.running[key] = asyncio.create_task(self._refresh(key, compute))
            return kept
        # nothing usable kept: readers asking at once share one computation
        task = self.running.get(key)
        if task is None:
            task = self.running[key] = asyncio.create_task(self._refresh(key, compute))
        return await asyncio.shield(task)

    async def _refresh(self, key: Hashable, compute: Callable[[], Awaitable[Kept]]) -> Kept | None:
        try:
            page = await compute()
            if page.keep:
                self.kept[key] = page
            else:
                self.kept.pop(key, None)
            return page
        except Exception:  # noqa: BLE001 - a failed refresh keeps the old page; the caller recomputes
            log.exception("status page: refresh failed")
            return None
        finally:
            self.running.pop(key, None)
