"""The collector's application: `create_app(state)` puts the API, the status pages and the
background jobs together around one `CollectorState`."""

from __future__ import annotations

from aiohttp import web

from collector.api import LIMITER, STATE, error_middleware, ingest_count_middleware, setup_routes
from collector.api.middleware import limits_middleware, security_headers_middleware
from collector.jobs import JobRunner
from collector.migrate import upgrade_async
from collector.ratelimit import RateLimiter
from collector.service import CollectorState
from collector.status import setup_status_routes

__all__ = ["LIMITER", "STATE", "create_app"]


async def _lifecycle(app: web.Application):
    """1. Migrate the database; 2. sync the config into it; 3. run the background jobs; on exit,
    stop them, give up the leases, close the notifier and the engine."""
    state = app[STATE]
    await upgrade_async(state.config.database_url)
    await state.sync_config()
    jobs = JobRunner(state)
    jobs.start()
    yield
    await jobs.stop()
    await state.release_leases()
    await state.deliverer.close()
    await state.engine.dispose()


def create_app(state: CollectorState) -> web.Application:
    app = web.Application(middlewares=[security_headers_middleware, ingest_count_middleware, error_middleware,
                                       limits_middleware(state.config)], client_max_size=state.config.max_body_bytes)
    app[STATE] = state
    app[LIMITER] = RateLimiter(state.config.rate_limit.requests_per_second, state.config.rate_limit.burst)
    setup_routes(app)
    setup_status_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    return app
