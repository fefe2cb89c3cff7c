"""Heavy reads off the event loop: a report or a claim over a month of results loads a quarter of a
million rows and re-judges every round, seconds of pure Python that would stall every agent's
`POST /api/v1/results` behind it. Such a job runs here in a worker process, with a database
connection of its own, and the event loop only awaits its answer.

A process, not a thread: loading the rows and judging them hold the GIL (a thread would still
take the event loop's turns), and the job's inputs and answer are small (a policy and a period
in, a report out), while the rows it reads never cross a process boundary.

At most `MAX_RUNNING` jobs run at once; up to `MAX_WAITING` more wait their turn; beyond that a
job is refused (503 with Retry-After), so a crowd of readers delays readers, never ingest. The
workers start with the first job and end with the collector: at its exit (queued jobs cancelled,
running ones ended: they only read) or at its death (each watches its parent).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Awaitable, Callable, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from collector.errors import RequestError

T = TypeVar("T")

# Two workers: on the project's 2-core machine that leaves the event loop its share of a core
# while both are busy, and it bounds what a crowd of anonymous readers can make the collector do.
MAX_RUNNING = 2
# Jobs that may wait for a worker; past this a reader is asked to come back (a client that gives
# up while waiting frees its place at once).
MAX_WAITING = 16
RETRY_AFTER_SECONDS = 5

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_in_flight = 0
# Jobs answered by a worker process since start (tests read it to see that a report went there).
completed = 0


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: a fork of a process running an event loop and threads (aiosqlite, the
            # scheduler) could inherit a held lock; a fresh interpreter cannot
            _pool = ProcessPoolExecutor(MAX_RUNNING, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_start)
        return _pool


def _stop_at_exit() -> None:
    """At interpreter exit, before concurrent.futures' own hook (which would run every queued job
    first): queued jobs are cancelled and running ones ended, so that a collector told to stop
    while readers wait for claims stops at once. The jobs only read; nothing is left half-written."""
    with _lock:
        pool = _pool
    if pool is None:
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


# threading's exit hooks run last-registered first: this one before concurrent.futures' own.
threading._register_atexit(_stop_at_exit)


def _drop_broken(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def database_of(session: AsyncSession) -> str | None:
    """The URL a worker can open the session's database with, or None when another process cannot
    reach it (an in-memory SQLite database, a session without an engine)."""
    bind = session.bind
    url = getattr(bind, "url", None)
    if url is None:
        return None
    if url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:") or "mode=memory" in str(url)):
        return None
    return url.render_as_string(hide_password=False)


async def run_off_loop(session: AsyncSession, job: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`await job(session, *args)`, run in a worker process on a session of its own over the same
    database. `job` must be a module-level coroutine function and `args` picklable; it reads only
    what is committed. Where no other process can open the database it runs here, as before."""
    url = database_of(session)
    if url is None:
        return await job(session, *args)
    _reserve(bounded=True)
    for attempt in (1, 2):
        pool = _executor()
        try:
            future: Future = pool.submit(_in_worker, url, job, args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start afresh once
            _release(None)
            _drop_broken(pool)
        else:
            future.add_done_callback(_release)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                _drop_broken(pool)
        if attempt == 1:
            _reserve(bounded=False)  # the retry takes the place its first attempt gave back
    raise RequestError(f"the worker computing reports stopped unexpectedly; retry in {RETRY_AFTER_SECONDS} s", 503,
                       retry_after_seconds=RETRY_AFTER_SECONDS)


def _reserve(*, bounded: bool) -> None:
    global _in_flight
    with _lock:
        if bounded and _in_flight >= MAX_RUNNING + MAX_WAITING:
            raise RequestError(f"the collector is computing {_in_flight} reports and claims already; "
                               f"retry in {RETRY_AFTER_SECONDS} s", 503, reason="busy",
                               retry_after_seconds=RETRY_AFTER_SECONDS)
        _in_flight += 1


def _release(future: Future | None) -> None:
    """A job's place is given back when the worker is done with it (or it was cancelled before it
    started), not when its requester stops waiting: the bound counts work, not waiters."""
    global _in_flight, completed
    with _lock:
        _in_flight -= 1
        if future is not None and not future.cancelled() and future.exception() is None:
            completed += 1


def _worker_start() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the collector shuts its workers down
    # itself, without a traceback from each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A collector killed outright (SIGKILL, out of memory) cannot: a worker would wait for its
    # next job for ever (it holds the job queue's other end itself, so it never reads its end).
    threading.Thread(target=_end_with_parent, name="end-with-collector", daemon=True).start()


def _end_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _in_worker(url: str, job: Callable[..., Awaitable[T]], args: tuple) -> T:
    """In the worker process: one event loop, one engine and one session for this job."""
    return asyncio.run(_with_session(url, job, args))


async def _with_session(url: str, job: Callable[..., Awaitable[T]], args: tuple) -> T:
    from collector.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await job(session, *args)
    finally:
        await engine.dispose()
