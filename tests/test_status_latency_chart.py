"""The response-time chart on a service's report page: hourly p50 latency per agent, inline SVG.

Results are posted through the real API to the real collector app on SQLite and PostgreSQL (the
median is computed by percentile_cont in PostgreSQL and in Python on SQLite: both must agree)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html import unescape

from collector.status.chart import chart_hours, latency_svg
from test_status_page import collector_app, make_state, post_results, result

UTC = timezone.utc


def _timed(slot: datetime, ok: bool, latency: float | None) -> dict:
    r = result(slot, ok, "web")
    r["latency_ms"] = latency
    return r


async def test_report_page_charts_hourly_median_per_agent_with_gaps(database_url, aiohttp_client) -> None:
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    two_ago, one_ago = hour - timedelta(hours=2), hour - timedelta(hours=1)
    # a1: 10, 30, 20 ms two hours ago (median 20), and a failure of 900 ms that must not count
    await post_results(http, "a1", [_timed(two_ago + timedelta(minutes=m), True, v)
                                    for m, v in ((1, 10.0), (2, 30.0), (3, 20.0))]
                       + [_timed(two_ago + timedelta(minutes=4), False, 900.0)])
    # a2: two hours ago (median of 40 and 60 is 50), nothing in the hour after, then 70 ms
    await post_results(http, "a2", [_timed(two_ago + timedelta(minutes=1), True, 40.0),
                                    _timed(two_ago + timedelta(minutes=2), True, 60.0),
                                    _timed(hour + timedelta(seconds=0), True, 70.0)])
    # a result older than the 24 hours shown is left out
    await post_results(http, "a3", [_timed(hour - timedelta(hours=30), True, 5.0)])

    resp = await http.get("/policies/vision")
    assert resp.status == 200, await resp.text()
    html = await resp.text()
    svg = re.search(r"<svg[^>]*latency-chart.*?</svg>", html, re.S)
    assert svg, "no latency chart on the report page"
    svg = svg.group(0)
    desc = unescape(re.search(r"<desc[^>]*>(.*?)</desc>", svg, re.S).group(1))
    assert f"a1: {two_ago:%H}:00 20 ms" in desc
    assert f"a2: {two_ago:%H}:00 50 ms, {hour:%H}:00 70 ms" in desc
    assert "900" not in desc and "a3" not in desc
    assert f"{one_ago:%H}:00" not in desc.split("a2:")[1]
    # one line per agent with results; a2's line is broken at the empty hour (two separate moves)
    paths = dict(re.findall(r'data-agent="([^"]+)" d="([^"]+)"', svg))
    assert set(paths) == {"a1", "a2"}
    assert paths["a2"].count("M") == 2 and "L" not in paths["a2"]
    assert re.search(r">\d+ ms</text>", svg)  # the axis is labelled in ms
    legend = re.search(r'<ul class="chart-legend">(.*?)</ul>', html, re.S).group(1)
    assert "a1" in legend and "a2" in legend


async def test_report_page_without_results_says_so_and_draws_no_line(database_url, aiohttp_client) -> None:
    state = make_state(database_url)
    http = await aiohttp_client(collector_app(state))
    html = await (await http.get("/policies/gpu")).text()
    svg = re.search(r"<svg[^>]*latency-chart.*?</svg>", html, re.S).group(0)
    assert "No successful result" in svg
    assert "<path" not in svg


def test_names_are_escaped_in_the_svg() -> None:
    hours = chart_hours(datetime(2026, 1, 1, 12, 30, tzinfo=UTC))
    hostile = '<script>alert(1)</script>"'
    svg = str(latency_svg(hostile, {hostile: {hours[-1]: 12.0}}, hours))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'data-agent="&lt;script&gt;alert(1)&lt;/script&gt;&quot;"' in svg
