"""A stub collector for the agent benchmarks: acknowledges every batch the agent ships (so the
agent does its full work: spool, ship, delete), and keeps each result's start lateness
(started - slot) so the benchmark can read the exact distribution.

    python bench/sink.py PORT

GET /bench/stats?from=EPOCH&to=EPOCH -> {"results", "ok", "lateness": {p50, p99, max, over_1s}}
for results whose slot lies in [from, to).
"""
from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone

from aiohttp import web

RESULTS: list[tuple[float, float, bool]] = []  # (slot epoch, lateness seconds, ok)
MAX_KEPT = 3_000_000  # bounded: about 4 minutes at 10,000 results/s


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def post_results(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    results = body["results"]
    for r in results:
        if len(RESULTS) < MAX_KEPT:
            slot = _epoch(r["slot"])
            RESULTS.append((slot, _epoch(r["started"]) - slot, bool(r["ok"])))
    return web.json_response({"accepted": len(results), "duplicates": 0})


async def post_heartbeat(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"server_time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")})


async def stats(request: web.Request) -> web.Response:
    lo = float(request.query.get("from", "0"))
    hi = float(request.query.get("to", "inf"))
    late = sorted(l for s, l, _ in RESULTS if lo <= s < hi)
    ok = sum(1 for s, _, k in RESULTS if lo <= s < hi and k)

    def pct(q: float) -> float | None:
        if not late:
            return None
        return late[min(len(late) - 1, max(0, math.ceil(q * len(late)) - 1))]

    return web.json_response({
        "results": len(late), "ok": ok, "received_total": len(RESULTS),
        "lateness": {"p50": pct(0.50), "p99": pct(0.99), "max": late[-1] if late else None,
                     "over_1s": sum(1 for l in late if l >= 1.0)},
    })


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v1/results", post_results)
    app.router.add_post("/api/v1/heartbeat", post_heartbeat)
    app.router.add_get("/bench/stats", stats)
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
