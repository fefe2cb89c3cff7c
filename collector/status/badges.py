"""SVG badges for a service, in the shields.io style people embed in a README: its current state
(`GET /badge/{service}.svg`) and its availability over the last days
(`GET /badge/{service}/availability.svg?days=30`).

Drawn on the server as text, no I/O. Names come from the configuration and may hold anything,
so every text is escaped. A state or a figure the collector cannot vouch for (no verdict-bearing
round) is grey and says so: it is never drawn green.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from .format import percent
from .history import Figure

__all__ = ["STATE_BADGES", "state_badge", "availability_badge", "svg_badge"]

GREY = "#9f9f9f"
# state kind -> (text, colour); shields' palette, grey for unknown.
STATE_BADGES = {
    "up": ("up", "#4c1"),
    "degraded": ("degraded", "#dfb317"),
    "failing": ("failing", "#fe7d37"),
    "outage": ("outage", "#e05d44"),
    "maintenance": ("maintenance", "#007ec6"),
    "unknown": ("unknown", GREY),
}


def _width(text: str) -> int:
    # Verdana 11 px averages about 6.5 px a character (shields measures exactly; close enough
    # that the text stays inside its half).
    return int(len(text) * 6.5) + 10


def svg_badge(label: str, message: str, colour: str) -> str:
    """A flat two-part badge: `label` on grey, `message` on `colour`."""
    left, right = _width(label), _width(message)
    total = left + right
    title = escape(f"{label}: {message}")
    label_x, message_x = left * 5, (left + right / 2) * 10
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label={quoteattr(f"{label}: {message}")}>'
        f"<title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill={quoteattr(colour)}/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'text-rendering="geometricPrecision" font-size="110">'
        f'<text x="{label_x:.0f}" y="140" transform="scale(.1)" fill="#fff">{escape(label)}</text>'
        f'<text x="{message_x:.0f}" y="140" transform="scale(.1)" fill="#fff">{escape(message)}</text>'
        "</g></svg>"
    )


def state_badge(service: str, kind: str) -> str:
    text, colour = STATE_BADGES.get(kind, STATE_BADGES["unknown"])
    return svg_badge(service, text, colour)


def _availability_colour(value: float) -> str:
    if value >= 100:
        return "#4c1"
    if value >= 99:
        return "#97ca00"
    if value >= 95:
        return "#dfb317"
    return "#e05d44"


def availability_badge(service: str, days: int, figure: Figure) -> str:
    """"99.95 %" when every minute of the period was judged; "≥ 98.1 %" (the worst case, every
    unknown minute down) when some were not; "unknown" in grey when none was."""
    label = f"{service} {days}d"
    if figure.best is None or figure.worst is None:
        return svg_badge(label, "unknown", GREY)
    if figure.certain:
        return svg_badge(label, percent(figure.best), _availability_colour(figure.best))
    return svg_badge(label, f"≥ {percent(figure.worst)}", _availability_colour(figure.worst))
