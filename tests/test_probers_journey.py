"""Journeys against a real JSON API on loopback: steps in order, variables extracted and used,
assertions that name the failing step and assertion, secrets never in a detail."""
from __future__ import annotations

import json

import pytest
from probers_helpers import PASSWORD, TOKEN_PREFIX, ThreadedServer, api_app

from agent.probers import journey, run_probe
from protocol.checks import JOURNEY_MAX_STEPS, ConfigError, parse_checks
from protocol.redact import REDACTED, redact_check


@pytest.fixture(scope="module")
def api():
    server = ThreadedServer(api_app()).start()
    yield server
    server.stop()


def login_steps(base: str, password: str = PASSWORD, profile_asserts=None):
    return [
        {"name": "sign-in", "method": "POST", "url": f"{base}/api/login",
         "json": {"user": "alice", "password": password},
         "assert": [{"status": 200}, {"jsonpath": "$.token", "exists": True}],
         "extract": {"token": {"jsonpath": "$.token"}}},
        {"name": "profile", "url": f"{base}/api/me", "headers": {"Authorization": "Bearer ${token}"},
         "assert": profile_asserts or [{"status": 200}, {"body_regex": "alice"}, {"max_latency": "2s"}]},
    ]


def journey_check(steps, **fields):
    spec = {"name": "login", "type": "journey", "interval": "10s", "timeout": fields.pop("timeout", "3s"),
            "steps": steps, **fields}
    return parse_checks([spec])[0]


async def test_the_login_journey_passes_step_by_step(api):
    result = await journey.probe(journey_check(login_steps(api.url)))
    assert (result.ok, result.error, result.failed_step) == (True, None, None), result.detail
    assert [(s.name, s.ok, s.status_code) for s in result.steps] == [("sign-in", True, 200), ("profile", True, 200)]
    assert all(s.latency_ms > 0 for s in result.steps)
    assert set(result.steps[0].phases) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert result.latency_ms >= sum(s.latency_ms for s in result.steps)
    assert result.phases is None  # journeys keep their phases per step
    wire = result.to_wire()
    assert wire["steps"] == [
        {"name": "sign-in", "ok": True, "error": None, "detail": None, "status_code": 200,
         "latency_ms": result.steps[0].latency_ms},
        {"name": "profile", "ok": True, "error": None, "detail": None, "status_code": 200,
         "latency_ms": result.steps[1].latency_ms},
    ]
    assert "failed_step" not in wire and "phases" not in wire


async def test_a_wrong_password_fails_the_first_step_and_names_the_assertion(api):
    result = await journey.probe(journey_check(login_steps(api.url, password="wrong-password-here")))
    assert (result.ok, result.error, result.failed_step, result.status_code) == (False, "assertion", "sign-in", 401)
    assert result.detail == "step 'sign-in': assertion 1 (status 200): status is 401"
    assert [s.name for s in result.steps] == ["sign-in"]  # the profile step never ran
    assert result.steps[0].to_wire()["error"] == "assertion"
    assert result.to_wire()["failed_step"] == "sign-in"


@pytest.mark.parametrize(
    ("asserts", "detail"),
    [
        ([{"jsonpath": "$.user", "equals": "bob"}], "assertion 1 (jsonpath '$.user' equals 'bob'): value is 'alice'"),
        ([{"jsonpath": "$.id", "equals": 42}, {"jsonpath": "$.id", "equals": "42"},
          {"jsonpath": "$.roles[1]", "regex": "^op"}, {"jsonpath": "$.missing", "exists": False},
          {"jsonpath": "$.roles[5]", "exists": True}],
         "assertion 5 (jsonpath '$.roles[5]' exists): selects nothing"),
        ([{"header": "Content-Type", "regex": "json"}, {"header": "X-Nope", "exists": True}],
         "assertion 2 (header 'X-Nope' exists): no such header"),
        ([{"status": [200, 204]}, {"body_regex": "carol"}], "assertion 2 (body_regex 'carol'): no match in the"),
        ([{"jsonpath": "$.roles[?(@ == 'ops')]", "exists": True}, {"status": 201}],
         "assertion 2 (status 201): status is 200"),
    ],
)
async def test_assertions_of_each_kind(api, asserts, detail):
    result = await journey.probe(journey_check(login_steps(api.url, profile_asserts=asserts)))
    assert (result.ok, result.error, result.failed_step) == (False, "assertion", "profile")
    assert result.detail.startswith(f"step 'profile': {detail}"), result.detail


async def test_a_slow_step_fails_max_latency(api):
    steps = [{"name": "slow", "url": f"{api.url}/api/slow?s=0.2", "assert": [{"max_latency": "50ms"}]}]
    result = await journey.probe(journey_check(steps))
    assert (result.ok, result.error, result.failed_step) == (False, "assertion", "slow")
    assert result.detail.startswith("step 'slow': assertion 1 (max_latency 50ms): the response took ")
    assert result.steps[0].latency_ms >= 200


async def test_neither_the_password_nor_an_extracted_token_shows_in_a_detail(api):
    # The API echoes the Authorization header (X-Echo), and a wrong password in its 401 body; both
    # assertions below fail by quoting what they saw.
    echo = login_steps(api.url, profile_asserts=[{"header": "X-Echo", "equals": "nothing"}])
    result = await journey.probe(journey_check(echo))
    assert result.error == "assertion"
    assert result.detail == f"step 'profile': assertion 1 (header 'X-Echo' equals 'nothing'): value is 'Bearer {REDACTED}'"
    assert TOKEN_PREFIX not in json.dumps(result.to_dict())

    leaked = [{"name": "sign-in", "method": "POST", "url": f"{api.url}/api/login",
               "json": {"user": "alice", "password": "hunter2-not-it"},
               "assert": [{"status": 401}, {"jsonpath": "$.echo", "equals": "x"}]}]
    result = await journey.probe(journey_check(leaked))
    assert result.detail == f"step 'sign-in': assertion 2 (jsonpath '$.echo' equals 'x'): value is '{REDACTED}'"
    assert "hunter2" not in json.dumps(result.to_dict())


def test_the_redaction_rules_cover_a_journeys_fields():
    spec = {"name": "login", "type": "journey", "steps": [
        {"name": "sign-in", "url": "https://u:pw-secret@app.example/login?token=abc123", "json": {"password": "p4ss"},
         "headers": {"Authorization": "Bearer x", "Accept": "application/json"}},
        {"name": "raw", "url": "https://app.example/", "body": "user=alice&password=p4ss"},
        {"name": "form", "url": "https://app.example/", "form": {"password": "p4ss"}},
    ]}
    shown = redact_check(spec)
    first, second, third = shown["steps"]
    assert first["url"] == f"https://u:{REDACTED}@app.example/login?token={REDACTED}"
    assert (first["json"], second["body"], third["form"]) == (REDACTED, REDACTED, REDACTED)
    assert first["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    # a step read back redacted cannot be PUT again as it is
    with pytest.raises(ConfigError) as caught:
        parse_checks([{**shown, "interval": "60s"}])
    assert str(caught.value).splitlines()[:2] == [
        "checks.0.steps.0.url: holds <redacted>, the placeholder reads of a check show in place of a credential: "
        "give the real value",
        "checks.0.steps.1.body: holds <redacted>, the placeholder reads of a check show in place of a credential: "
        "give the real value",
    ]


async def test_variables_from_regex_and_header_and_cookies_carry_over(api):
    steps = [
        {"name": "page", "url": f"{api.url}/html",
         "extract": {"order": {"regex": r'id="order-(\d+)"'}, "request": {"header": "X-Request-Id"}}},
        {"name": "sign-in", "method": "POST", "url": f"{api.url}/api/login",
         "json": {"user": "alice", "password": PASSWORD, "note": "${order}/${request}"}},
        {"name": "session", "url": f"{api.url}/api/session", "assert": [{"jsonpath": "$.ok", "equals": True}]},
    ]
    result = await journey.probe(journey_check(steps))
    assert result.ok, result.detail
    assert [s.status_code for s in result.steps] == [200, 200, 200]


async def test_a_value_that_cannot_be_extracted_fails_the_step(api):
    steps = [{"name": "page", "url": f"{api.url}/html", "extract": {"token": {"jsonpath": "$.token"}}},
             {"name": "next", "url": f"{api.url}/api/me?t=${{token}}"}]
    result = await journey.probe(journey_check(steps))
    assert (result.ok, result.error, result.failed_step) == (False, "assertion", "page")
    assert result.detail.startswith("step 'page': extract 'token' (jsonpath '$.token'): the body is not JSON")


async def test_without_a_status_assertion_a_step_wants_2xx(api):
    result = await journey.probe(journey_check([{"name": "boom", "url": f"{api.url}/api/error"}]))
    assert (result.ok, result.error, result.status_code) == (False, "status", 500)
    assert result.detail == "step 'boom': status 500 not in 2xx"


async def test_steps_follow_redirects_with_the_credentials_for_their_own_origin(api):
    steps = login_steps(api.url)
    steps[1]["url"] = f"{api.url}/go"  # 302 to /api/me on the same origin: the token goes along
    result = await journey.probe(journey_check(steps))
    assert result.ok, result.detail


async def test_the_journey_timeout_bounds_every_step(api):
    steps = [{"name": "first", "url": f"{api.url}/api/slow?s=0.1"},
             {"name": "second", "url": f"{api.url}/api/slow?s=2"}]
    result = await journey.probe(journey_check(steps, timeout="500ms"))
    assert (result.ok, result.error, result.failed_step) == (False, "timeout", "second")
    assert result.detail == "step 'second': no complete response before the journey's 500ms ran out"
    assert result.latency_ms < 1000


async def test_a_refused_connection_names_the_step(api):
    steps = login_steps(api.url)
    steps[1]["url"] = "http://127.0.0.1:9/api/me"
    result = await journey.probe(journey_check(steps))
    assert (result.ok, result.error, result.failed_step) == (False, "connect", "profile")
    assert [s.ok for s in result.steps] == [True, False]


async def test_only_max_body_bytes_of_a_body_are_read(api):
    steps = [{"name": "big", "url": f"{api.url}/big", "assert": [{"body_regex": "END"}]}]
    small = await journey.probe(journey_check(steps, max_body_bytes="1MB"))
    whole = await journey.probe(journey_check(steps, max_body_bytes="3MB"))
    assert (small.ok, small.error) == (False, "assertion")
    assert small.detail == "step 'big': assertion 1 (body_regex 'END'): no match in the 1048576 bytes read"
    assert whole.ok


async def test_a_slow_journey_is_degraded(api):
    steps = [{"name": "slow", "url": f"{api.url}/api/slow?s=0.15"}]
    result = await run_probe(journey_check(steps, degraded_after="100ms"))
    assert (result.ok, result.degraded) == (True, True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(steps=[{"name": f"s{i}", "url": "http://a.example/"} for i in range(JOURNEY_MAX_STEPS + 1)]),
         "checks.0.steps: list should have at most 10 items after validation, not 11"),
        (lambda c: c.update(timeout="3m", interval="10m"), "checks.0.timeout: a journey takes at most 2m, got 3m"),
        (lambda c: c.update(max_body_bytes="11MB"), "checks.0.max_body_bytes: must be 1 byte to 10MB, got 11534336 bytes"),
        (lambda c: c["steps"][1].update(headers={"Authorization": "Bearer ${tok}"}),
         "checks.0.steps.1.headers.Authorization: uses ${tok}, which no earlier step extracts"),
        (lambda c: c["steps"][0].update(url="http://a.example/${token}"),
         "checks.0.steps.0.url: uses ${token}, extracted only by steps.0, which runs later"),
        (lambda c: c["steps"][1].update(name="sign-in"), "checks.0.steps.1.name: duplicate step name 'sign-in' "
                                                         "(first used by steps.0)"),
        (lambda c: c["steps"][0].update(body="raw"), "checks.0.steps.0.json: give one request body: body or json"),
        (lambda c: c["steps"][0]["assert"].append({"status": 200, "body_regex": "x"}),
         "checks.0.steps.0.assert.2: give exactly one of status, header, body_regex, jsonpath, max_latency (got "
         "status and body_regex)"),
        (lambda c: c["steps"][0]["assert"].append({"body_regex": "x", "equals": 1}),
         "checks.0.steps.0.assert.2.equals: only a header or jsonpath assertion takes equals"),
        (lambda c: c["steps"][0]["assert"].append({"jsonpath": "$..[", "exists": True}),
         "checks.0.steps.0.assert.2.jsonpath: invalid JSONPath '$..[': Parse error near the end of string!"),
        (lambda c: c["steps"][0]["extract"].update({"2fa": {"header": "X"}}),
         "checks.0.steps.0.extract.2fa: invalid variable name '2fa': a letter or _, then letters, digits or _"),
        (lambda c: c["steps"][0].update(url="ftp://a.example/"),
         "checks.0.steps.0.url: invalid url 'ftp://a.example/': scheme must be http or https"),
        (lambda c: c["steps"][0].update(asserts=[]), "checks.0.steps.0.asserts: unknown key"),
        (lambda c: c.update(degraded_after="5s", timeout="5s"),
         "checks.0.degraded_after: degraded_after 5s must be less than timeout 5s (a probe that slow fails with "
         "timeout)"),
    ],
)
def test_invalid_journeys_name_the_field(change, message):
    spec = {"name": "login", "type": "journey", "interval": "60s", "steps": login_steps("http://a.example")}
    change(spec)
    with pytest.raises(ConfigError) as caught:
        parse_checks([spec])
    assert str(caught.value) == message


def test_a_password_in_a_body_is_not_echoed_by_a_validation_message():
    spec = {"name": "login", "type": "journey", "steps": [
        {"name": "a", "url": "http://a.example/", "form": {"password": 12345678}}]}
    with pytest.raises(ConfigError) as caught:
        parse_checks([spec])
    assert "12345678" not in str(caught.value)
    assert str(caught.value).startswith("checks.0.steps.0.form.password: input should be a valid string")
