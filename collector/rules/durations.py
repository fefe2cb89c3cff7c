"""Durations as written in policies: "250ms", "5s", "2m", "1h", "1d" or a bare number of seconds.

One parser for the whole project (the agent's), so that a policy, a collector config and an agent
config read "5m" the same way; both ship in the same package.
"""
from __future__ import annotations

from protocol.durations import format_duration, parse_duration

__all__ = ["parse_duration", "format_duration"]
