"""Evaluation shared by several collectors on one database: the policies are split into shards,
and each shard is judged by the one collector that holds its lease (`evaluation/N` in the
leases table).

A policy's shard comes from its name alone (CRC-32, the same in every process and on every
machine, unlike Python's salted `hash()`), so every collector agrees on it without talking to the
others. Each collector also holds a lease of its own (`collectors/...`), renewed every
evaluation tick: the live ones are those whose lease has not expired, and each tries to hold its
fair share, ceil(shards / live collectors). It renews what it holds, takes free or expired shards
up to its share, and gives back what exceeds it, so that a newcomer finds shards to take; while
another live collector holds less than floor(shards / live collectors), the largest holders give
back one shard a tick and nobody takes past that floor, so the split ends even (16 shards on three
collectors: 6, 5, 5). A collector that dies stops renewing; its shards expire with its lease
and the others take them at their next tick, within the lease ttl plus one evaluation interval.

Every claim is a conditional UPDATE (or an INSERT that does nothing on conflict) whose row count
says who won, in a short transaction of its own: a claim locks one row, and the renewal locks
only this collector's own rows, so two collectors claiming at once never wait on each other in a
cycle (no deadlock).

All collectors on one database must use the same `evaluation.shards`; a different count maps
policies to other shards.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy.ext.asyncio import async_sessionmaker

from collector import store

log = logging.getLogger("uptime.collector.shards")

SHARD_PREFIX = "evaluation/"
MEMBER_PREFIX = "collectors/"
# A collector's own lease is dropped from the table this long after it expired: instance ids
# are new at every start, so the rows of stopped collectors would otherwise pile up.
FORGET_AFTER = timedelta(hours=1)


@lru_cache(maxsize=65536)
def shard_of(policy: str, shards: int) -> int:
    """The shard a policy belongs to: stable across processes, machines and Python versions."""
    return zlib.crc32(policy.encode("utf-8")) % shards


def shard_lease(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def member_lease(instance_id: str) -> str:
    """This collector's own lease, the sign that it is alive; hashed to fit the lease name
    column whatever the host name's length."""
    return MEMBER_PREFIX + hashlib.sha256(instance_id.encode("utf-8")).hexdigest()[:32]


def fair_share(shards: int, collectors: int) -> int:
    """Shards each collector tries to hold; rounding up, so that the shares cover every shard."""
    return math.ceil(shards / max(1, collectors))


def _shard_number(name: str, shards: int) -> int | None:
    tail = name.removeprefix(SHARD_PREFIX)
    return int(tail) if tail.isdigit() and int(tail) < shards else None


@dataclass(frozen=True)
class Claim:
    """The outcome of one round of claiming: what this collector holds now and what changed."""

    held: frozenset[int]
    taken: frozenset[int] = frozenset()
    released: frozenset[int] = frozenset()
    lost: frozenset[int] = frozenset()  # held before, found taken by another collector
    collectors: int = 1
    share: int = 0


@dataclass
class ShardClaimer:
    """One collector's side of the shard leases."""

    sessionmaker: async_sessionmaker
    holder: str
    shards: int
    held: frozenset[int] = frozenset()
    rng: random.Random = field(default_factory=random.Random)

    async def claim(self, now: datetime, ttl: float) -> Claim:
        """1. Renew this collector's own lease and the shard leases it holds, and count the live
              collectors (unexpired own leases, this one included).
           2. Over its fair share: give back the extras, so that a newcomer can take them; at
              it, while another live collector holds less than the even split and no shard is
              free, one of the largest holders gives one back.
           3. Under it: take free or expired shards, one conditional claim each, until it has
              its share (only the even split while another is short) or none is left.
        """
        me = member_lease(self.holder)
        base, started = now, time.monotonic()

        def clock() -> datetime:
            # `now` moved on by the time this round has taken so far: each lease's expiry counts
            # from when it is written, even when a busy machine (or many claims) makes the round
            # long, so that no lease is born nearly expired
            return base + timedelta(seconds=time.monotonic() - started)

        async with self.sessionmaker() as session:
            await store.hold_lease(session, me, self.holder, ttl, clock())
            members = await store.leases_named(session, MEMBER_PREFIX)
            rows = await store.leases_named(session, SHARD_PREFIX)
            now = clock()  # the moment of this snapshot, against which expiry is judged below
            mine = {n for r in rows if r.holder == self.holder and (n := _shard_number(r.name, self.shards)) is not None}
            renewed = await store.renew_leases(session, [shard_lease(n) for n in sorted(mine)], self.holder, ttl, clock())
            # shards numbered past `evaluation.shards` (the count was lowered): given back
            stale = [r.name for r in rows if r.holder == self.holder and _shard_number(r.name, self.shards) is None]
            await store.release_leases(session, stale, self.holder)
            await session.commit()
        if any(m.expires_at < now - FORGET_AFTER for m in members):
            # on its own: a transaction that deletes others' rows holds no lease row of its own
            async with self.sessionmaker() as session:
                await store.drop_expired_leases(session, MEMBER_PREFIX, now - FORGET_AFTER)
                await session.commit()
        held = {n for n in mine if shard_lease(n) in renewed}
        lost = self.held - held
        live = {m.holder for m in members if m.name != me and m.expires_at >= now}
        live.discard(self.holder)
        collectors = 1 + len(live)
        share = fair_share(self.shards, collectors)
        floor = self.shards // collectors
        busy: dict[int, str] = {n: r.holder for r in rows if r.holder != self.holder and r.expires_at >= now
                                and (n := _shard_number(r.name, self.shards)) is not None}
        counts = Counter(h for h in busy.values() if h in live)
        free = [n for n in range(self.shards) if n not in busy and n not in held]
        # another live collector below the even split (a newcomer): nobody takes past that split,
        # and a largest holder gives one back a tick, until the newcomer has its part
        starving = any(counts[h] < floor for h in live)
        limit = floor if starving else share
        released: set[int] = set()
        taken: set[int] = set()
        if len(held) > share:
            released = set(sorted(held)[share:])
        elif starving and not free and len(held) > floor and len(held) >= max(counts.values(), default=0):
            released = {max(held)}
        if released:
            async with self.sessionmaker() as session:
                await store.release_leases(session, [shard_lease(n) for n in sorted(released)], self.holder)
                await session.commit()
            held -= released
        elif len(held) < limit:
            # in an order of this collector's own, so that collectors starting together mostly
            # try different shards instead of queueing on the same row
            self.rng.shuffle(free)
            for n in free:
                if len(held) >= limit:
                    break
                async with self.sessionmaker() as session:
                    won = await store.hold_lease(session, shard_lease(n), self.holder, ttl, clock())
                    await session.commit()
                if won:
                    held.add(n)
                    taken.add(n)
        claim = Claim(frozenset(held), frozenset(taken), frozenset(released), frozenset(lost), collectors, share)
        self.held = claim.held
        if taken or released or lost:
            log.info("evaluation shards: took %s, gave back %s, lost %s; holding %d of %d (share %d of %d live collectors) as %s",
                     _ranges(taken), _ranges(released), _ranges(lost), len(held), self.shards, share, collectors, self.holder)
        return claim

    async def renew(self, now: datetime, ttl: float) -> frozenset[int]:
        """Renew this collector's own lease and the shards it holds, taking and giving back
        nothing (during a long evaluation pass); returns the shards found taken by another."""
        names = [shard_lease(n) for n in sorted(self.held)] + [member_lease(self.holder)]
        async with self.sessionmaker() as session:
            renewed = await store.renew_leases(session, names, self.holder, ttl, now)
            await session.commit()
        lost = frozenset(n for n in self.held if shard_lease(n) not in renewed)
        if lost:
            self.held -= lost
            log.warning("evaluation shards %s taken by another collector during a pass (longer than the lease ttl?) from %s",
                        _ranges(set(lost)), self.holder)
        return lost

    async def release(self) -> None:
        """On a clean stop: the shards and this collector's own lease, so that the others count
        one collector fewer and take its shards at their next tick, not after the ttl."""
        async with self.sessionmaker() as session:
            await store.release_leases(session, [shard_lease(n) for n in sorted(self.held)] + [member_lease(self.holder)],
                                       self.holder)
            await session.commit()
        self.held = frozenset()


def _ranges(shards: set[int]) -> str:
    """`0-3,7` for a log line; `-` for none."""
    out: list[tuple[int, int]] = []
    for n in sorted(shards):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out) or "-"
