"""Secrets in check definitions, and the one place that hides them.

A check may carry credentials: a password in its URL (`https://user:pw@host/`), secret header
values (`Authorization`, `X-Api-Key`, ...), secret query parameters (`?token=...`), a request body.
They go, in full, only to the agents the check is assigned to (GET /api/v1/assignments). Everything
else (the checks and policies API, /metrics, the status page, webhooks, the log lines of collector
and agent, the `detail` of a probe result) shows them through these functions, so both sides hide
exactly the same things:

* `redact_check(spec)`: a copy of a check (or a journey step) with `url` redacted, the values of
  secret headers and any request `body`/`json`/`form` replaced by `<redacted>`, recursively
  through `steps`;
* `redact_url(url)`: `https://user:<redacted>@host/?token=<redacted>&page=2`;
* `redact_text(text, secrets)`: free text (an exception message, a log line) with every URL in it
  redacted and every known secret value of the check (`secret_values(spec)`) replaced.

Which headers are secret (case-insensitive): Authorization, Proxy-Authorization, Cookie,
Set-Cookie, X-Api-Key, Api-Key, X-Auth-Token, and any header whose name contains `token`,
`secret`, `key`, `password`, `auth` or `session`. Which query parameters are secret: those named
token, api_key, apikey, key, password, passwd, pwd, secret, signature, sig, auth, access_token,
or whose name contains `token`, `secret`, `password` or `signature` (X-Amz-Signature,
client_secret, ...). In the URL's user info the password is the secret; a user name given
without a password (`https://<token>@host/`, `https://<key>:@host/`) is itself the credential
and is redacted too.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_HEADER_WORDS",
    "SECRET_QUERY_PARAMS",
    "is_secret_header",
    "is_secret_param",
    "redact_check",
    "redact_headers",
    "redact_text",
    "redact_url",
    "secret_values",
]

REDACTED = "<redacted>"

SECRET_HEADERS = frozenset(
    ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token")
)
SECRET_HEADER_WORDS = ("token", "secret", "key", "password", "auth", "session")

SECRET_QUERY_PARAMS = frozenset(
    ("token", "api_key", "apikey", "api-key", "key", "password", "passwd", "pwd", "secret", "signature", "sig",
     "auth", "access_token")
)
# Substrings long enough not to hit ordinary words (`key` would hide `monkey`, `sig` `design`).
SECRET_PARAM_WORDS = ("token", "secret", "password", "signature")

# Keys of a check (or journey step) whose whole value is a request body: never shown. A TCP
# check's `send` is one too (an SMTP AUTH or a Redis AUTH line carries a password).
BODY_KEYS = ("body", "json", "form", "send")

# Shorter values are not searched for in free text: they would blank out ordinary words.
MIN_SECRET_CHARS = 4

# A URL inside free text: a scheme, then everything up to white space or a quote/bracket.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def is_secret_header(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in SECRET_HEADER_WORDS)


def is_secret_param(name: str) -> bool:
    lowered = unquote(name).strip().lower()
    return lowered in SECRET_QUERY_PARAMS or any(word in lowered for word in SECRET_PARAM_WORDS)


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """(user, password, host[:port]) of a netloc, undecoded; None where absent."""
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None), hostport


def redact_url(url: str) -> str:
    """The URL with its credentials replaced by `<redacted>`: the password of its user info (or
    the user name when it comes without one) and the values of secret query parameters. The rest
    is kept as written. Text that does not parse as a URL is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    user, password, hostport = _userinfo(netloc)
    if user is not None:
        if password:
            netloc = f"{user}:{REDACTED}@{hostport}"
        elif user or password is not None:
            netloc = f"{REDACTED}@{hostport}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else parts.query
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if eq and value and is_secret_param(name):
        return f"{name}={REDACTED}"
    return pair


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {name: (REDACTED if is_secret_header(str(name)) else value) for name, value in headers.items()}


def redact_check(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a check definition (a prober spec, a collector entry, a journey step) safe to show:
    `url` redacted, secret header values and request bodies replaced, `steps` redacted each."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "url" and isinstance(value, str):
            out[key] = redact_url(value)
        elif key == "headers" and isinstance(value, Mapping):
            out[key] = redact_headers(value)
        elif key in BODY_KEYS and value is not None:
            out[key] = REDACTED
        elif key == "steps" and isinstance(value, list):
            out[key] = [redact_check(step) if isinstance(step, Mapping) else step for step in value]
        else:
            out[key] = value
    return out


def secret_values(spec: Mapping[str, Any]) -> frozenset[str]:
    """Every secret a check definition holds, as it could appear in free text: the URL's
    credentials (as written and decoded), secret header values (also without an `Authorization`
    scheme word), secret query parameter values and string bodies; through `steps` too."""
    found: set[str] = set()
    url = spec.get("url")
    if isinstance(url, str):
        found.update(_url_secrets(url))
    headers = spec.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if is_secret_header(str(name)) and isinstance(value, str):
                found.add(value)
                _scheme, _, credentials = value.partition(" ")
                if credentials:
                    found.add(credentials.strip())
    for key in BODY_KEYS:
        if isinstance(spec.get(key), str):
            found.add(spec[key])
    for step in spec.get("steps") or ():
        if isinstance(step, Mapping):
            found.update(secret_values(step))
    return frozenset(s for s in found if len(s) >= MIN_SECRET_CHARS)


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found: set[str] = set()
    user, password, _ = _userinfo(parts.netloc)
    for value in (password, user if not password else None):
        if value:
            found.update((value, unquote(value)))
    for pair in parts.query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_param(name):
            found.update((value, unquote(value)))
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text with every URL in it redacted (`redact_url`) and every one of `secrets` (a check's
    `secret_values`) replaced by `<redacted>`, longest first so that no part of one is left."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return text
