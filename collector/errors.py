"""A client's mistake, and how pydantic's validation errors are put in a client's words.

Raised anywhere below the HTTP layer; the API's error middleware answers it with its status and
`{"error": message, ...}`, never a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class RequestError(Exception):
    """A client's mistake: answered with `status` and {"error": message, **extra}. `reason`, when
    given, is what the ingest-rejection metric counts it under."""

    def __init__(self, message: str, status: int = 400, *, reason: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.extra = extra


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        parts.append(f"{location(e['loc']) or 'body'}: {pydantic_message(e)}")
    more = len(err.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def location(loc: tuple) -> str:
    text = ""
    for p in loc:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def pydantic_message(e: dict) -> str:
    return "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
