"""Journey prober: up to JOURNEY_MAX_STEPS HTTP requests in order, as a user's session makes them
(Grafana Synthetic Monitoring's MultiHTTP, Gatus's conditions).

Each step sends its request (method, URL, headers, body: `${name}` replaced by a variable an
earlier step extracted), follows redirects as an HTTP check does (credentials only to the step's
own origin: agent/probers/http.py), reads at most `max_body_bytes` of the body, then judges its
assertions in order and extracts its variables. Cookies the target sets are kept for the later
steps (one cookie jar per run). The first step that fails ends the journey; the result names it
(`failed_step`) and, in `detail`, the step and the assertion: `step 'profile': assertion 2
(body_regex 'alice'): no match in the 312 bytes read`. `steps` holds every step that ran, with its
status, latency and (for `uptime-agent probe`) its phases. `timeout` bounds the whole journey.

Failure reasons (wire-protocol.md): a step's request fails as an HTTP check's does (dns, connect,
timeout, tls, blocked, body, status); a step without a `status` assertion that gets no 2xx fails
with `status`; `assertion` when an assertion fails or a variable cannot be extracted.

Secrets: the details never show the check's credentials (protocol/redact.py: URL user info and
secret query parameters, secret headers, request bodies and, inside JSON or form bodies, the
values of keys that name a secret) nor any value a step extracted (a session token, most often).
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
import time
import traceback
from typing import Any

import aiohttp
from yarl import URL

from protocol.checks import VARIABLE, Assertion, Extraction, JourneyCheck, JourneyStep
from protocol.durations import format_duration
from protocol.redact import BODY_KEYS, is_secret_header, redact_text, redact_url, secret_values
from agent.probers import http, tls
from agent.probers.guard import AddressGuard
from agent.probers.result import ProbeResult, StepResult

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def _compiled_path(expression: str):
    from jsonpath_ng.ext import parse

    return parse(expression)


async def probe(
    check: JourneyCheck,
    *,
    agent_id: str | None = None,
    guard: AddressGuard | None = None,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> ProbeResult:
    """Run the journey (see `_probe`); no detail shows a credential or an extracted value."""
    extracted: set[str] = set()
    try:
        result = await _probe(check, agent_id=agent_id, guard=guard, resolver=resolver, extracted=extracted)
    except Exception as exc:  # a bug here, not a failing journey
        secrets = _secrets(check) | extracted
        log.error("journey probe of %s failed unexpectedly:\n%s", check.name,
                  redact_text("".join(traceback.format_exception(exc)), secrets).rstrip())
        return ProbeResult.failure("internal", redact_text(f"{type(exc).__name__}: {exc}", secrets))
    secrets = _secrets(check) | extracted
    steps = tuple(
        dataclasses.replace(step, detail=redact_text(step.detail, secrets)) if step.detail else step
        for step in result.steps or ()
    )
    detail = redact_text(result.detail, secrets) if result.detail else result.detail
    return dataclasses.replace(result, steps=steps, detail=detail)


def _secrets(check: JourneyCheck) -> frozenset[str]:
    """The check's own secrets (protocol/redact.py), and in JSON or form bodies the values of
    keys that name one (`password`, `api_key`, `token`, ...)."""
    spec = check.model_dump(by_alias=True)
    found = set(secret_values(spec))
    for step in spec["steps"]:
        for key in BODY_KEYS:
            found.update(_secret_leaves(step.get(key)))
    return frozenset(s for s in found if len(s) >= 4)


def _secret_leaves(value: Any, secret: bool = False):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _secret_leaves(item, secret or is_secret_header(str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _secret_leaves(item, secret)
    elif secret and value is not None and not isinstance(value, bool):
        yield str(value)


async def _probe(
    check: JourneyCheck,
    *,
    agent_id: str | None,
    guard: AddressGuard | None,
    resolver: aiohttp.abc.AbstractResolver | None,
    extracted: set[str],
) -> ProbeResult:
    """1. one connector (a fresh connection per request, no DNS cache, the guard if on) and one
    cookie jar for the run; 2. each step in order: request, assertions, extractions; 3. the
    first failing step ends the run and names the result's failure."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    deadline = loop.time() + check.timeout
    done: list[StepResult] = []

    def total_ms() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        context = tls.client_context(check.tls_verify, check.tls_ca_file)
    except tls.CaFileError as exc:
        first = check.steps[0].name
        step = StepResult(first, False, "tls", str(exc))
        return ProbeResult.failure("tls", f"step {first!r}: {exc}", steps=(step,), failed_step=first)
    connector = http.new_connector(guard, resolver)
    # unsafe=True: keep cookies of targets addressed by IP too (aiohttp drops them by default)
    jar = aiohttp.CookieJar(unsafe=True)
    variables: dict[str, str] = {}
    async with aiohttp.ClientSession(connector=connector, trace_configs=[http.TRACE], cookie_jar=jar) as session:
        for step in check.steps:
            result = await _run_step(session, connector, check, step, variables, extracted, context, deadline, agent_id)
            done.append(result)
            if not result.ok:
                return ProbeResult.failure(
                    result.error, f"step {step.name!r}: {result.detail}", latency_ms=total_ms(),
                    status_code=result.status_code, steps=tuple(done), failed_step=step.name,
                )
    return ProbeResult.success(total_ms(), status_code=done[-1].status_code, steps=tuple(done),
                               detail=f"{len(done)} steps passed")


async def _run_step(session, connector, check: JourneyCheck, step: JourneyStep, variables: dict[str, str],
                    extracted: set[str], context, deadline: float, agent_id: str | None) -> StepResult:
    timing = http.Timing()

    def fail(reason: str, detail: str, status: int | None = None, latency: float | None = None) -> StepResult:
        return StepResult(step.name, False, reason, detail, status, latency, timing.seconds())

    url_text = _fill(step.url, variables)
    try:
        url = URL(url_text)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("not an http(s) URL with a host")
    except ValueError as exc:
        return fail("assertion", f"url {redact_url(url_text)!r} (after its variables) is invalid: {exc}")
    headers = {"User-Agent": http.user_agent(agent_id), **{k: _fill(v, variables) for k, v in step.headers.items()}}
    data: bytes | dict[str, str] | None = None
    if step.body is not None:
        data = _fill(step.body, variables).encode()
    elif step.form is not None:
        data = {k: _fill(v, variables) for k, v in step.form.items()}
    json_body = _fill_json(step.json_body, variables) if step.json_body is not None else None
    if asyncio.get_running_loop().time() >= deadline:
        return fail("timeout", f"the journey's {format_duration(check.timeout)} ran out before this step")
    try:
        reply = await http.fetch(
            session, connector, method=step.method, url=url, headers=headers, deadline=deadline,
            timeout=check.timeout, timing=timing, ssl_context=context, verified=check.tls_verify,
            data=data, json_body=json_body, follow_redirects=step.follow_redirects, max_body=check.max_body_bytes,
        )
    except http.FetchFailed as failed:
        detail = failed.detail
        if failed.reason == "timeout":
            detail = f"no complete response before the journey's {format_duration(check.timeout)} ran out"
        return fail(failed.reason, detail, failed.status_code)
    response = _Response(reply)
    if not any(a.subject == "status" for a in step.assertions) and not 200 <= reply.status <= 299:
        return fail("status", f"status {reply.status} not in 2xx", reply.status, reply.latency_ms)
    for index, assertion in enumerate(step.assertions, 1):
        problem = _judge(assertion, response)
        if problem is not None:
            return fail("assertion", f"assertion {index} ({assertion.describe()}): {problem}", reply.status,
                        reply.latency_ms)
    for name, source in step.extract.items():
        value = _extract(source, response)
        if value is None:
            return fail("assertion", f"extract {name!r} ({source.describe()}): {response.why_missing(source)}",
                        reply.status, reply.latency_ms)
        variables[name] = value
        extracted.add(value)
    return StepResult(step.name, True, None, None, reply.status, reply.latency_ms, timing.seconds())


def _fill(text: str, variables: dict[str, str]) -> str:
    # every name was checked against the earlier steps' extractions when the check was validated
    return VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def _fill_json(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, variables)
    if isinstance(value, dict):
        return {key: _fill_json(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_json(item, variables) for item in value]
    return value


class _Response:
    """A step's reply with its body decoded and parsed as JSON at most once."""

    def __init__(self, reply: http.Reply):
        self.reply = reply
        self._text: str | None = None
        self._json: Any = None
        self._json_error: str | None = None
        self._parsed = False

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.reply.body.decode(self.reply.charset, errors="replace")
        return self._text

    def json(self) -> tuple[Any, str | None]:
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.text)
            except ValueError as exc:
                self._json_error = f"the body is not JSON ({exc}; {len(self.reply.body)} bytes read)"
        return self._json, self._json_error

    def select(self, expression: str) -> tuple[list[Any], str | None]:
        document, error = self.json()
        if error is not None:
            return [], error
        return [match.value for match in _compiled_path(expression).find(document)], None

    def why_missing(self, source: Extraction) -> str:
        if source.jsonpath is not None:
            _, error = self.json()
            return error or f"{source.jsonpath} selects nothing in the JSON body"
        if source.regex is not None:
            return f"no match in the {len(self.reply.body)} bytes read"
        return "no such header in the response"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _equal(value: Any, expected: Any) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if value == expected:
        return True
    # `equals: "42"` matches 42 (YAML authors often quote numbers)
    return isinstance(expected, str) and not isinstance(value, (dict, list)) and _scalar(value) == expected


def _judge(assertion: Assertion, response: _Response) -> str | None:
    """Why the response fails `assertion`, or None."""
    reply = response.reply
    subject = assertion.subject
    if subject == "status":
        codes = assertion.status if isinstance(assertion.status, list) else [assertion.status]
        return None if reply.status in codes else f"status is {reply.status}"
    if subject == "max_latency":
        limit_ms = assertion.max_latency * 1000
        return None if reply.latency_ms <= limit_ms else f"the response took {reply.latency_ms:.0f} ms"
    if subject == "body_regex":
        if re.search(assertion.body_regex, response.text):
            return None
        return f"no match in the {len(reply.body)} bytes read"
    test = assertion.test
    if subject == "header":
        values = reply.headers.getall(assertion.header, [])
        if test == "exists":
            present = bool(values)
            if present == (assertion.exists is not False):
                return None
            return "no such header" if not present else f"present: {values[0][:100]!r}"
        if not values:
            return "no such header"
        if test == "regex":
            return None if any(re.search(assertion.regex, v) for v in values) else f"value is {values[0][:100]!r}"
        wanted = _scalar(assertion.equals)  # header values are text: `equals: 5` means "5"
        return None if wanted in values else f"value is {values[0][:100]!r}"
    values, error = response.select(assertion.jsonpath)
    if error is not None:
        return error
    if test == "exists":
        if bool(values) == (assertion.exists is not False):
            return None
        return "selects nothing" if not values else f"selects {_scalar(values[0])[:100]!r}"
    if not values:
        return "selects nothing"
    first = values[0]
    if test == "regex":
        return None if re.search(assertion.regex, _scalar(first)) else f"value is {_scalar(first)[:100]!r}"
    return None if _equal(first, assertion.equals) else f"value is {_scalar(first)[:100]!r}"


def _extract(source: Extraction, response: _Response) -> str | None:
    if source.jsonpath is not None:
        values, _error = response.select(source.jsonpath)
        return _scalar(values[0]) if values else None
    if source.regex is not None:
        match = re.search(source.regex, response.text)
        if match is None:
            return None
        return match.group(1) if match.re.groups else match.group(0)
    return response.reply.headers.get(source.header)
