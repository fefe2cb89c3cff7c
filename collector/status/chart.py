"""The response-time chart of a service's page: p50 latency per hour and agent, as inline SVG.

No JavaScript: the SVG is drawn on the server. An hour without a successful result is a gap in
its agent's line (the path is broken there), never a value drawn as zero or interpolated.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Sequence

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from collector.db import Result

__all__ = ["hourly_medians", "latency_svg"]

UTC = timezone.utc
HOUR = timedelta(hours=1)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H, LEFT, RIGHT, TOP, BOTTOM = 480, 160, 52, 8, 8, 24


def _utc(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def hourly_medians(session: AsyncSession, checks: Sequence[str], start: datetime,
                         end: datetime) -> dict[str, dict[datetime, float]]:
    """{agent: {hour start: median latency_ms of its successful results of `checks` that hour}}.

    PostgreSQL computes the median itself (percentile_cont, grouped by agent and hour). SQLite has
    no percentile: the rows are read and grouped here, bounded by one service's checks and the
    chart's hours."""
    if not checks:
        return {}
    where = (Result.check.in_(list(checks)), Result.ok.is_(True), Result.latency_ms.is_not(None),
             Result.slot >= start, Result.slot < end)
    out: dict[str, dict[datetime, float]] = {}
    if session.bind.dialect.name == "postgresql":
        hour = func.date_trunc("hour", Result.slot).label("hour")
        stmt = (select(Result.agent_id, hour,
                       func.percentile_cont(0.5).within_group(Result.latency_ms).label("p50"))
                .where(*where).group_by(Result.agent_id, hour))
        for agent, at, p50 in (await session.execute(stmt)).all():
            out.setdefault(agent, {})[_utc(at)] = float(p50)
        return out
    stmt = select(Result.agent_id, Result.slot, Result.latency_ms).where(*where)
    samples: dict[tuple[str, datetime], list[float]] = {}
    for agent, slot, latency in (await session.execute(stmt)).all():
        at = _utc(slot).replace(minute=0, second=0, microsecond=0)
        samples.setdefault((agent, at), []).append(float(latency))
    for (agent, at), values in samples.items():
        out.setdefault(agent, {})[at] = statistics.median(values)
    return out


def _nice_max(value: float) -> float:
    """The axis top: the next 1, 2 or 5 times a power of ten at or above `value`."""
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if value <= factor * step:
            return factor * step
    return 10 * step


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def latency_svg(service: str, medians: dict[str, dict[datetime, float]], hours: Sequence[datetime]) -> Markup:
    """The chart for `hours` (hour starts, oldest first). Every name is escaped: agent ids and
    service names come from configuration, which the page must not trust as markup."""
    agents = sorted(medians)
    top = _nice_max(max((v for m in medians.values() for v in m.values()), default=1.0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = plot_w / max(len(hours) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    title = f"Response time of {service}: median per hour, last {len(hours)} hours, by agent"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="latency-chart" viewBox="0 0 {W} {H}" '
             f'width="{W}" height="{H}" role="img" aria-labelledby="latency-title latency-desc">',
             f'<title id="latency-title">{escape(title)}</title>']
    if agents:
        desc = "; ".join(f"{a}: " + (", ".join(f"{h:%H}:00 {_ms(medians[a][h])}" for h in hours if h in medians[a])
                                     or "no successful result") for a in agents)
    else:
        desc = "No successful result in these hours."
    parts.append(f'<desc id="latency-desc">{escape(desc)}</desc>')
    # axes and labels in ms: 0, half and top
    for v in (0.0, top / 2, top):
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ccc" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{escape(_ms(v))}</text>')
    for i, h in enumerate(hours):
        if i % 6 == 0 or i == len(hours) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{H - 8}" text-anchor="middle" font-size="10">{h:%H}:00</text>')
    for n, agent in enumerate(agents):
        colour = COLOURS[n % len(COLOURS)]
        # a new "M" after each hour without a value: the line is broken there, not bridged
        d, pen_down = [], False
        for i, h in enumerate(hours):
            v = medians[agent].get(h)
            if v is None:
                pen_down = False
                continue
            d.append(f'{"L" if pen_down else "M"}{x(i):.1f},{y(v):.1f}')
            pen_down = True
        if d:
            parts.append(f'<path class="agent-line" data-agent="{escape(agent)}" d="{" ".join(d)}" fill="none" '
                         f'stroke="{colour}" stroke-width="1.5"><title>{escape(agent)}</title></path>')
            # an hour alone between gaps would be an invisible path: a dot shows it
            for i, h in enumerate(hours):
                v = medians[agent].get(h)
                if v is not None and medians[agent].get(h - HOUR) is None and medians[agent].get(h + HOUR) is None:
                    parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
    parts.append("</svg>")
    # swatches drawn, not styled: the pages' policy allows no style attributes
    legend = "".join(f'<li><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" '
                     f'fill="{COLOURS[n % len(COLOURS)]}"/></svg> {escape(a)}</li>' for n, a in enumerate(agents))
    return Markup("".join(parts) + (f'<ul class="chart-legend">{legend}</ul>' if legend else ""))


def chart_hours(now: datetime, count: int = 24) -> list[datetime]:
    """The `count` hour starts ending with the current (partial) hour, oldest first."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - HOUR * i for i in range(count - 1, -1, -1)]
