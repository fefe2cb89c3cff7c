"""Check definitions: what a check is, as the collector hands it to agents
(GET /api/v1/assignments, wire-protocol.md) and as an agent's own `checks:` lists it.

pydantic models carry their defaults and their rules; unknown keys are errors (`extra="forbid"`),
and every problem is a (key path, message) pair, e.g. `checks.0.interval: invalid duration 'abc'`.
Both the agent and the collector validate a check with `parse_checks`, so that an agent accepts
whatever the collector accepted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.durations import format_duration, format_size, parse_duration, parse_size
from protocol.redact import BODY_KEYS, REDACTED, is_secret_header, redact_url

__all__ = [
    "CHECK_TYPES",
    "ConfigModel",
    "Check",
    "ConfigError",
    "DnsCheck",
    "Duration",
    "HttpCheck",
    "IcmpCheck",
    "JourneyCheck",
    "JourneyStep",
    "KeyRuleError",
    "TcpCheck",
    "parse_checks",
    "positive",
    "problems_of",
    "unique_names",
]

Duration = Annotated[float, BeforeValidator(parse_duration)]
# Days: a certificate with fewer days left fails `cert_expiry` (ten years is more than any CA issues).
MinCertDays = Annotated[int, Field(ge=1, le=3650)]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# RFC 9110 §5.1: a field name is a token; anything else is refused by every HTTP client.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class KeyRuleError(ValueError):
    """A rule broken by a key below the validated model: `path` is relative to the model."""

    def __init__(self, path: Sequence[str | int], message: str):
        super().__init__(message)
        self.path = tuple(path)


class ConfigError(Exception):
    """One or more configuration problems, each a (key path, message) pair."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(
            f"{prefix}{path}: {message}" if path else f"{prefix}{message}"
            for path, message in self.problems
        )

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.problems, source)


class ConfigModel(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _ca_file(path: str | None) -> str | None:
    if path is not None and (not path.strip() or "\0" in path):
        raise ValueError("must be the path of a PEM file of CA certificates")
    return path


def http_url(url: str) -> str:
    """An http(s) URL with a host and a valid port, else ValueError. The message shows the URL
    redacted: it reaches logs and API answers (protocol/redact.py)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"invalid url {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"invalid url {redact_url(url)!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"invalid url {redact_url(url)!r}: no host")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError(f"invalid url {redact_url(url)!r}: bad port") from None
    return url


def http_headers(headers: dict[str, str]) -> dict[str, str]:
    # A header no client can send makes a check that can never succeed: refused up front.
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise KeyRuleError((name,), f"invalid header name {name!r}: letters, digits and !#$%&'*+-.^_`|~ only")
        if any(c in value for c in "\r\n\0"):
            raise KeyRuleError((name,), "header value must not contain CR, LF or NUL")
    return headers


def http_method(method: str) -> str:
    if method.upper() not in HTTP_METHODS:
        raise ValueError(f"unsupported method {method!r} (one of {', '.join(HTTP_METHODS)})")
    return method.upper()


def status_codes(codes: list[int]) -> list[int]:
    for code in codes:
        if not 100 <= code <= 599:
            raise ValueError(f"invalid status code {code}: must be 100-599")
    return codes


def regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    return pattern


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


class _CheckBase(ConfigModel):
    name: str
    interval: Duration = 60.0
    # A successful probe slower than this is ok but `degraded` (wire-protocol.md); None: never.
    degraded_after: Duration | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or name != name.strip():
            raise ValueError(f"invalid check name {name!r}: must be non-empty without surrounding spaces")
        if len(name) > 200 or any(ord(c) < 32 for c in name):
            raise ValueError(f"invalid check name {name!r}: at most 200 printable characters")
        return name

    @field_validator("interval")
    @classmethod
    def _interval(cls, interval: float) -> float:
        return positive(interval)

    @field_validator("timeout", check_fields=False)
    @classmethod
    def _timeout_below_interval(cls, timeout: float, info) -> float:
        positive(timeout)
        interval = info.data.get("interval")
        if interval is not None and timeout >= interval:
            raise ValueError(
                f"timeout {format_duration(timeout)} must be less than interval {format_duration(interval)}"
            )
        return timeout

    @model_validator(mode="after")
    def _degraded_below_timeout(self):
        # Numezis SaaS SLA §1: the Service is also down when it "does not meet the defined operating
        # criteria"; a slow answer is one. A threshold at or past the timeout could never be seen:
        # such a probe fails with `timeout` instead.
        limit = self.degraded_after
        if limit is not None:
            if limit <= 0:
                raise KeyRuleError(("degraded_after",), f"must be greater than 0, got {format_duration(limit)}")
            timeout = getattr(self, "timeout", None)
            if timeout is not None and limit >= timeout:
                raise KeyRuleError(
                    ("degraded_after",),
                    f"degraded_after {format_duration(limit)} must be less than timeout {format_duration(timeout)} "
                    "(a probe that slow fails with timeout)",
                )
        return self


class HttpCheck(_CheckBase):
    # `type` first among the type-specific fields so messages about it come early; `interval`
    # is declared (in the base) before `timeout`, which the timeout rule relies on.
    type: Literal["http"]
    url: str
    method: str = "GET"
    timeout: Duration = 5.0
    expected_status: list[int] | None = None  # None: any 2xx
    body_match: str | None = None
    tls_verify: bool = True
    # PEM file (on the agent's host) of the CAs to trust instead of the system's, as
    # blackbox_exporter's tls_config.ca_file.
    tls_ca_file: str | None = None
    # Fail with `cert_expiry` when the presented chain's earliest expiry is fewer days away.
    min_cert_days: MinCertDays | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    _ca_file = field_validator("tls_ca_file")(lambda v: _ca_file(v))

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return http_url(url)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return http_headers(headers)

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        return http_method(method)

    @field_validator("expected_status")
    @classmethod
    def _expected_status(cls, codes: list[int] | None) -> list[int] | None:
        if codes is None:
            return None
        if not codes:
            raise ValueError("must list at least one status code (leave it out to accept any 2xx)")
        return status_codes(codes)

    @field_validator("body_match")
    @classmethod
    def _body_match(cls, pattern: str | None) -> str | None:
        return regex(pattern)

    @model_validator(mode="after")
    def _can_succeed(self) -> HttpCheck:
        """Combinations no probe can ever pass are refused when the check is defined, naming the field."""
        # A check read back from the API (secrets shown as <redacted>) and PUT again as it was
        # would probe with the placeholder instead of the credential.
        if REDACTED in self.url:
            raise KeyRuleError(("url",), f"holds {REDACTED}, the placeholder reads of a check show in place of a "
                                         "credential: give the real value")
        for name, value in self.headers.items():
            if REDACTED in value:
                raise KeyRuleError(("headers", name), f"holds {REDACTED}, the placeholder reads of a check show in "
                                                      "place of a credential: give the real value")
        parts = urlsplit(self.url)
        if "@" in parts.netloc:
            for name in self.headers:
                if name.lower() == "authorization":
                    # aiohttp (like most clients) refuses to send both: every probe would fail.
                    raise KeyRuleError(
                        ("headers", name),
                        f"conflicts with the user info in url {redact_url(self.url)!r}: give the "
                        "credentials either in the url or in the Authorization header, not both",
                    )
        if self.method == "HEAD" and self.body_match is not None:
            raise KeyRuleError(
                ("body_match",), "a HEAD response has no body, so it can never match: use method GET or drop body_match"
            )
        if self.min_cert_days is not None and parts.scheme != "https":
            raise KeyRuleError(
                ("min_cert_days",), f"url {redact_url(self.url)!r} is not https: there is no certificate to check"
            )
        return self

    def accepts_status(self, status: int) -> bool:
        if self.expected_status is None:
            return 200 <= status <= 299
        return status in self.expected_status


class IcmpCheck(_CheckBase):
    type: Literal["icmp"]
    host: str
    count: int = Field(3, ge=1, le=100)
    ping_interval: Duration = 0.2
    timeout: Duration = 2.0  # per echo request: how long to wait for its reply

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        if not host.strip():
            raise ValueError("must not be empty")
        return host.strip()

    @field_validator("ping_interval")
    @classmethod
    def _ping_interval(cls, value: float) -> float:
        return positive(value)

    @model_validator(mode="after")
    def _fits_in_interval(self) -> IcmpCheck:
        # A probe must end before the next slot starts, or slots would pile up.
        if self.worst_case_seconds() >= self.interval:
            raise KeyRuleError(
                ("count",),
                f"{self.count} pings take up to {format_duration(self.worst_case_seconds())} "
                f"((count - 1) x ping_interval + count x timeout), must be less than interval "
                f"{format_duration(self.interval)}",
            )
        return self

    def worst_case_seconds(self) -> float:
        return (self.count - 1) * self.ping_interval + self.count * self.timeout


# --- TCP ------------------------------------------------------------------------------------

STARTTLS_PROTOCOLS = ("smtp", "imap")


class TcpCheck(_CheckBase):
    """Connect to host:port; optionally TLS (right away, or after an SMTP/IMAP STARTTLS), then
    optionally send `send` and expect a reply matching the regex `expect` (searched line by line:
    `^` and `$` match at every line)."""

    type: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)
    timeout: Duration = 5.0
    send: str = ""
    expect: str | None = None
    tls: bool = False
    starttls: Literal[STARTTLS_PROTOCOLS] | None = None  # type: ignore[valid-type]
    tls_verify: bool = True
    tls_ca_file: str | None = None
    min_cert_days: MinCertDays | None = None

    _ca_file = field_validator("tls_ca_file")(lambda v: _ca_file(v))
    _expect = field_validator("expect")(lambda v: regex(v))

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        host = host.strip().removeprefix("[").removesuffix("]")
        if not host or any(c.isspace() or ord(c) < 32 for c in host) or "/" in host:
            raise ValueError(f"invalid host {host!r}: a name or an IP address")
        return host

    @model_validator(mode="after")
    def _tls_rules(self) -> TcpCheck:
        if self.tls and self.starttls is not None:
            raise KeyRuleError(("starttls",), "give tls: true (TLS right after connect) or starttls, not both")
        if self.min_cert_days is not None and not self.uses_tls:
            raise KeyRuleError(("min_cert_days",), "no TLS on this check (set tls: true or starttls): "
                                                   "there is no certificate to check")
        if REDACTED in self.send:
            raise KeyRuleError(("send",), f"holds {REDACTED}, the placeholder reads of a check show in place of a "
                                          "credential: give the real value")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.starttls is not None


# --- DNS ------------------------------------------------------------------------------------

DNS_RECORDS = ("A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA")
# RFC 1035 §4.1.1 and RFC 6895 §2.3: the names dnspython (and dig) give the response codes.
DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
              "NXRRSET", "NOTAUTH", "NOTZONE")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def dns_server(text: str) -> tuple[str, int]:
    """(host, port) of a resolver written `host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid server {text!r}: use host, host:port or [IPv6]:port")
        port_text = rest[1:] if rest else "53"
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port_text = text, "53"
    else:
        host, _, port_text = text.partition(":")
        port_text = port_text or "53"
    if not host or any(c.isspace() for c in host) or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid server {text!r}: use host, host:port or [IPv6]:port (port 1-65535)")
    return host, int(port_text)


class DnsCheck(_CheckBase):
    """Query `query` for `record` at `server` (default: the first nameserver of the agent's
    /etc/resolv.conf), over UDP with a TCP retry when the answer is truncated (or over TCP only);
    then judge the response code and the answers."""

    type: Literal["dns"]
    query: str
    record: Annotated[Literal[DNS_RECORDS], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = "A"  # type: ignore[valid-type]
    server: str | None = None
    transport: Literal["udp", "tcp"] = "udp"
    timeout: Duration = 2.0
    expect_rcode: Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = "NOERROR"
    # Each listed value must be one of the answers (exact; names without case or a trailing dot).
    expect_answers: list[str] | None = None
    # Each regex must match at least one answer.
    expect_answers_regex: list[str] | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, query: str) -> str:
        name = query.strip()
        labels = name.removesuffix(".").split(".") if name not in (".", "") else []
        if not labels or len(name.removesuffix(".")) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
            raise ValueError(f"invalid name {query!r}: labels of 1-63 letters, digits, '-' or '_', at most 253 characters")
        return name

    @field_validator("server")
    @classmethod
    def _server(cls, server: str | None) -> str | None:
        if server is not None:
            dns_server(server)
        return server

    @field_validator("expect_rcode")
    @classmethod
    def _rcode(cls, rcode: str) -> str:
        if rcode not in DNS_RCODES:
            raise ValueError(f"unknown rcode {rcode!r} (one of {', '.join(DNS_RCODES)})")
        return rcode

    @field_validator("expect_answers", "expect_answers_regex")
    @classmethod
    def _answers(cls, values: list[str] | None, info) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("must list at least one answer (leave it out to accept any)")
        if info.field_name == "expect_answers_regex":
            for index, pattern in enumerate(values):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise KeyRuleError((index,), f"invalid regex {pattern!r}: {exc}") from None
        return values

    @model_validator(mode="after")
    def _answers_need_noerror(self) -> DnsCheck:
        if self.expect_rcode != "NOERROR" and (self.expect_answers or self.expect_answers_regex):
            key = "expect_answers" if self.expect_answers else "expect_answers_regex"
            raise KeyRuleError((key,), f"a {self.expect_rcode} response has no answers, so it can never match: "
                                       "drop it or expect NOERROR")
        return self

    def server_address(self) -> tuple[str, int] | None:
        return dns_server(self.server) if self.server is not None else None


# --- journeys -------------------------------------------------------------------------------

# Named limits of a journey (as Grafana Synthetic Monitoring's MultiHTTP: at most 10 requests).
JOURNEY_MAX_STEPS = 10
JOURNEY_MAX_TIMEOUT = 120.0  # the whole journey, every step and redirect included
JOURNEY_MAX_ASSERTIONS = 20  # per step
JOURNEY_MAX_EXTRACTS = 10  # per step
JOURNEY_DEFAULT_BODY_BYTES = 1024 * 1024  # of each response, read (and matched) at most
JOURNEY_MAX_BODY_BYTES = 10 * 1024 * 1024
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}$")
ASSERTION_SUBJECTS = ("status", "header", "body_regex", "jsonpath", "max_latency")
ASSERTION_TESTS = ("equals", "regex", "exists")


def _jsonpath(expression: str) -> str:
    from jsonpath_ng.ext import parse

    try:
        parse(expression)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng reports some syntax errors as bare Exceptions
        raise ValueError(f"invalid JSONPath {expression!r}: {exc}") from None
    return expression


class Assertion(ConfigModel):
    """One thing a step's response must satisfy: `{status: 200}` (or a list), `{header: NAME}`
    with `equals`, `regex` or `exists`, `{body_regex: RE}`, `{jsonpath: EXPR}` with `equals`,
    `regex` or `exists` (default `exists: true`; the first value selected is judged), or
    `{max_latency: 2s}` (the step's own response time)."""

    status: int | list[int] | None = None
    header: str | None = None
    body_regex: str | None = None
    jsonpath: str | None = None
    max_latency: Duration | None = None
    equals: Any = None
    regex: str | None = None
    exists: bool | None = None

    _regexes = field_validator("body_regex", "regex")(lambda v: regex(v))
    _path = field_validator("jsonpath")(lambda v: None if v is None else _jsonpath(v))

    @field_validator("status")
    @classmethod
    def _status(cls, status: int | list[int] | None) -> int | list[int] | None:
        codes = status if isinstance(status, list) else [status] if status is not None else []
        if isinstance(status, list) and not status:
            raise ValueError("must list at least one status code")
        status_codes(codes)
        return status

    @field_validator("header")
    @classmethod
    def _header(cls, name: str | None) -> str | None:
        if name is not None and not HEADER_NAME.match(name):
            raise ValueError(f"invalid header name {name!r}")
        return name

    @field_validator("max_latency")
    @classmethod
    def _latency(cls, value: float | None) -> float | None:
        return None if value is None else positive(value)

    @model_validator(mode="after")
    def _one_subject(self) -> Assertion:
        given = [key for key in ASSERTION_SUBJECTS if key in self.model_fields_set and getattr(self, key) is not None]
        if len(given) != 1:
            got = f" (got {' and '.join(given)})" if given else ""
            raise ValueError(f"give exactly one of {', '.join(ASSERTION_SUBJECTS)}{got}")
        tests = [key for key in ASSERTION_TESTS if key in self.model_fields_set]
        if tests and given[0] not in ("header", "jsonpath"):
            raise KeyRuleError((tests[0],), f"only a header or jsonpath assertion takes {tests[0]}")
        if len(tests) > 1:
            raise KeyRuleError((tests[1],), f"give one of {', '.join(ASSERTION_TESTS)}, not {' and '.join(tests)}")
        if "exists" in tests and self.exists is None:
            raise KeyRuleError(("exists",), "must be true or false")
        return self

    @property
    def subject(self) -> str:
        return next(key for key in ASSERTION_SUBJECTS if getattr(self, key) is not None)

    @property
    def test(self) -> str:
        """equals, regex or exists (the default) for header and jsonpath assertions."""
        return next((key for key in ASSERTION_TESTS if key in self.model_fields_set), "exists")

    def describe(self) -> str:
        """How the assertion reads in a failure's detail: `jsonpath '$.token' exists`."""
        subject = self.subject
        if subject == "status":
            return f"status {self.status}"
        if subject == "body_regex":
            return f"body_regex {self.body_regex!r}"
        if subject == "max_latency":
            return f"max_latency {format_duration(self.max_latency)}"
        target = f"{subject} {getattr(self, subject)!r}"
        test = self.test
        if test == "exists":
            return f"{target} {'exists' if self.exists is not False else 'is absent'}"
        if test == "regex":
            return f"{target} matches {self.regex!r}"
        return f"{target} equals {self.equals!r}"


class Extraction(ConfigModel):
    """Where a variable's value comes from: `{jsonpath: EXPR}` (the first value selected),
    `{regex: RE}` on the body (its first group, or the whole match), `{header: NAME}`."""

    jsonpath: str | None = None
    regex: str | None = None
    header: str | None = None

    _regex = field_validator("regex")(lambda v: regex(v))
    _path = field_validator("jsonpath")(lambda v: None if v is None else _jsonpath(v))

    @model_validator(mode="after")
    def _one_source(self) -> Extraction:
        given = [key for key in ("jsonpath", "regex", "header") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of jsonpath, regex, header")
        return self

    def describe(self) -> str:
        key = next(key for key in ("jsonpath", "regex", "header") if getattr(self, key) is not None)
        return f"{key} {getattr(self, key)!r}"


def _strings(value: Any):
    """Every string inside a JSON value (keys and leaves)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class JourneyStep(ConfigModel):
    """One HTTP request of a journey. `url`, header values and the body may use `${name}` for a
    variable an earlier step extracted; `assert` lists what the response must satisfy (without a
    `status` assertion: any 2xx), `extract` the variables it yields for later steps."""

    name: str
    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(None, alias="json")
    form: dict[str, str] | None = None
    assertions: list[Assertion] = Field(default_factory=list, alias="assert", max_length=JOURNEY_MAX_ASSERTIONS)
    extract: dict[str, Extraction] = Field(default_factory=dict, max_length=JOURNEY_MAX_EXTRACTS)
    follow_redirects: bool = True

    _method = field_validator("method")(lambda v: http_method(v))
    _headers = field_validator("headers")(lambda v: http_headers(v))

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _STEP_NAME.match(name):
            raise ValueError(f"invalid step name {name!r}: 1-64 of letters, digits, space and ._:- "
                             "(starting with a letter or digit)")
        return name

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if VARIABLE.search(url) is None:
            return http_url(url)
        if not re.match(r"^https?://[^/$]", url, re.IGNORECASE):
            raise ValueError(f"invalid url {redact_url(url)!r}: must start with http:// or https:// and a host "
                             "(variables may follow)")
        return url

    @field_validator("extract")
    @classmethod
    def _variable_names(cls, extract: dict[str, Extraction]) -> dict[str, Extraction]:
        for name in extract:
            if not _VARIABLE_NAME.match(name):
                raise KeyRuleError((name,), f"invalid variable name {name!r}: a letter or _, then letters, digits or _")
        return extract

    @model_validator(mode="after")
    def _one_body(self) -> JourneyStep:
        bodies = [key for key, value in (("body", self.body), ("json", self.json_body), ("form", self.form))
                  if value is not None]
        if len(bodies) > 1:
            raise KeyRuleError((bodies[1],), f"give one request body: {' or '.join(bodies)}")
        # A step read back from the API shows its secrets as <redacted>: PUT again as it was, it
        # would send the placeholder instead of the credential.
        for key, value in (("url", self.url), ("headers", self.headers), ("body", self.body),
                           ("json", self.json_body), ("form", self.form)):
            if any(REDACTED in text for text in _strings(value)):
                raise KeyRuleError((key,), f"holds {REDACTED}, the placeholder reads of a check show in place of a "
                                           "credential: give the real value")
        return self

    def variables_used(self) -> list[tuple[tuple[str, ...], str]]:
        """(key path, variable name) of every `${name}` the request uses."""
        used = [(("url",), name) for name in VARIABLE.findall(self.url)]
        for header, value in self.headers.items():
            used += [(("headers", header), name) for name in VARIABLE.findall(value)]
        for key, value in (("body", self.body), ("json", self.json_body), ("form", self.form)):
            for text in _strings(value):
                used += [((key,), name) for name in VARIABLE.findall(text)]
        return used


class JourneyCheck(_CheckBase):
    """Up to JOURNEY_MAX_STEPS HTTP steps in order, sharing cookies; `timeout` bounds the whole
    journey. The first step that fails ends it, and names the check's failure."""

    type: Literal["journey"]
    timeout: Duration = 30.0
    steps: list[JourneyStep] = Field(min_length=1, max_length=JOURNEY_MAX_STEPS)
    tls_verify: bool = True
    tls_ca_file: str | None = None
    max_body_bytes: Annotated[int, BeforeValidator(parse_size)] = JOURNEY_DEFAULT_BODY_BYTES

    _ca_file = field_validator("tls_ca_file")(lambda v: _ca_file(v))

    @field_validator("timeout")
    @classmethod
    def _journey_timeout(cls, timeout: float) -> float:
        if timeout > JOURNEY_MAX_TIMEOUT:
            raise ValueError(f"a journey takes at most {format_duration(JOURNEY_MAX_TIMEOUT)}, got "
                             f"{format_duration(timeout)}")
        return timeout

    @field_validator("max_body_bytes")
    @classmethod
    def _body_bytes(cls, size: int) -> int:
        if not 1 <= size <= JOURNEY_MAX_BODY_BYTES:
            raise ValueError(f"must be 1 byte to {format_size(JOURNEY_MAX_BODY_BYTES)}, got {size} bytes")
        return size

    @model_validator(mode="after")
    def _steps_fit(self) -> JourneyCheck:
        """Step names are unique; every variable a step uses was extracted by an earlier step."""
        seen: dict[str, int] = {}
        defined: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            if step.name in seen:
                raise KeyRuleError(("steps", index, "name"),
                                   f"duplicate step name {step.name!r} (first used by steps.{seen[step.name]})")
            seen[step.name] = index
            for path, name in step.variables_used():
                if name not in defined:
                    later = next((i for i, s in enumerate(self.steps) if name in s.extract), None)
                    why = (f"extracted only by steps.{later}, which runs later" if later is not None and later >= index
                           else "which no earlier step extracts")
                    raise KeyRuleError(("steps", index, *path), f"uses ${{{name}}}, {why}")
            for name in step.extract:
                defined.setdefault(name, index)
        return self


Check = Annotated[Union[HttpCheck, IcmpCheck, TcpCheck, DnsCheck, JourneyCheck], Field(discriminator="type")]
AnyCheck = Union[HttpCheck, IcmpCheck, TcpCheck, DnsCheck, JourneyCheck]
CHECK_TYPES = ("http", "icmp", "tcp", "dns", "journey")


def unique_names(checks: Sequence[AnyCheck], prefix: tuple = ()) -> None:
    first_seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        if check.name in first_seen:
            raise KeyRuleError(
                (*prefix, index, "name"),
                f"duplicate check name {check.name!r} (first used by {'.'.join(map(str, (*prefix, first_seen[check.name])))})",
            )
        first_seen[check.name] = index


class _CheckList(ConfigModel):
    checks: list[Check]

    @model_validator(mode="after")
    def _unique(self) -> _CheckList:
        unique_names(self.checks, ("checks",))
        return self


def _message(error: Mapping[str, Any], hide_input: bool = False) -> tuple[tuple, str]:
    """(extra path, message) for one pydantic error, in our words; with `hide_input` the value
    given is not echoed (it may be a credential: protocol/redact.py)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyRuleError):
        return cause.path, str(cause)
    if isinstance(cause, Exception):
        return (), str(cause)
    if kind == "extra_forbidden":
        return (), "unknown key"
    if kind == "missing":
        return (), "required key missing"
    if kind == "union_tag_invalid":
        return ("type",), f"unknown check type {ctx.get('tag')!r} (one of {', '.join(CHECK_TYPES)})"
    if kind == "union_tag_not_found":
        return ("type",), f"required key missing (one of {', '.join(CHECK_TYPES)})"
    if kind == "literal_error":
        return (), f"{_lower_first(error['msg'])}, got {error.get('input')!r}"
    value = error.get("input")
    if hide_input:
        return (), _lower_first(error["msg"])
    if isinstance(value, (str, int, float, bool)) or value is None and "input" in error:
        return (), f"{_lower_first(error['msg'])}, got {value!r}"
    return (), _lower_first(error["msg"])


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def problems_of(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        # The discriminated union puts the tag ("http") into the location: drop it, it is no key.
        loc = [
            part
            for i, part in enumerate(error["loc"])
            if not (part in CHECK_TYPES and i > 0 and isinstance(error["loc"][i - 1], int))
        ]
        extra, message = _message(error, hide_input=_holds_secret(loc))
        path = ".".join(str(part) for part in (*loc, *extra))
        problems.append((path, message))
    return problems


def _holds_secret(loc: Sequence[Any]) -> bool:
    """True for the location of a value that may be a credential: a url, a secret header, a body."""
    for i, part in enumerate(loc):
        if part == "url" or part in BODY_KEYS:
            return True
        if part == "headers" and i + 1 < len(loc) and is_secret_header(str(loc[i + 1])):
            return True
    return False


def parse_checks(data: Any) -> list[AnyCheck]:
    """Validate a list of check objects (assignments from the collector, or a config's checks:)."""
    try:
        return _CheckList.model_validate({"checks": data}).checks
    except ValidationError as exc:
        raise ConfigError(problems_of(exc)) from None
