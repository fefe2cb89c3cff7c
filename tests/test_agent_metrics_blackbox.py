"""The series blackbox_exporter users query, exported by a running agent per check: every phase
label at every probe (a series never vanishes while its check exists), label values bounded,
all of them gone with the check."""
from __future__ import annotations

import math
import os
import shutil
import subprocess

import aiohttp
import pytest
from agent_helpers import FakeCollector, agent_config, wait_until
from probers_helpers import Certificates, DnsServer, ThreadedServer, api_app
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics
from agent.probers import http, run_probe
from agent.runner import Agent
from protocol.checks import parse_checks

HTTP_PHASES = {"resolve", "connect", "tls", "processing", "transfer"}


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    certs = Certificates(tmp_path_factory.mktemp("metrics-certs"))
    site = ThreadedServer(api_app(), certs.server_context(certs.good)).start()
    api = ThreadedServer(api_app()).start()
    dns = DnsServer().start()
    yield {"certs": certs, "site": site, "api": api, "dns": dns}
    dns.stop()
    api.stop()
    site.stop()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())))


def local_checks(targets) -> list[dict]:
    api = targets["api"].url
    return [
        {"name": "site", "type": "http", "interval": "1s", "timeout": "800ms", "url": f"{targets['site'].url}/html",
         "tls_ca_file": targets["certs"].ca_file, "min_cert_days": 14},
        {"name": "www", "type": "dns", "interval": "1s", "timeout": "800ms", "query": "www.example.test",
         "server": targets["dns"].address},
        {"name": "ssh", "type": "tcp", "interval": "1s", "timeout": "800ms", "host": "127.0.0.1",
         "port": targets["api"].port},
        {"name": "ping", "type": "icmp", "interval": "1s", "host": "127.0.0.1", "count": 2, "ping_interval": "50ms",
         "timeout": "300ms"},
        {"name": "flow", "type": "journey", "interval": "1s", "timeout": "800ms", "steps": [
            {"name": "page", "url": f"{api}/html"},
            {"name": "broken", "url": f"{api}/api/error"},
            {"name": "never", "url": f"{api}/html"},
        ]},
    ]


async def test_a_running_agent_exports_the_blackbox_series_for_each_check(targets, tmp_path):
    collector = await FakeCollector().start()
    agent = Agent(agent_config(tmp_path, collector.url, checks=local_checks(targets)))
    await agent.start()
    try:
        await wait_until(lambda: {r.get("check") for r in collector.stored.values()} >= {
            "site", "www", "ssh", "ping", "flow"}, timeout=10)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{agent.metrics_port}/metrics") as response:
                text = await response.text()
        found = samples(text)
        for name, kind in (("site", "http"), ("www", "dns"), ("ssh", "tcp"), ("ping", "icmp"), ("flow", "journey")):
            assert value(found, "probe_success", check=name, type=kind) == (0.0 if name == "flow" else 1.0), name
            assert value(found, "probe_duration_seconds", check=name, type=kind) > 0
        # HTTP: status, every phase, redirects, the chain's earliest expiry, the name lookup
        assert value(found, "probe_http_status_code", check="site") == 200
        assert {p for (n, labels), _ in found.items() if n == "probe_http_duration_seconds"
                for k, p in labels if k == "phase"} == HTTP_PHASES
        assert value(found, "probe_http_duration_seconds", check="site", phase="tls") > 0
        assert value(found, "probe_http_redirects", check="site") == 0
        assert value(found, "probe_ssl_earliest_cert_expiry", check="site") == targets["certs"].good_until.timestamp()
        # DNS, TCP, ICMP
        assert 0 < value(found, "probe_dns_lookup_time_seconds", check="www") < 1
        assert value(found, "probe_dns_answer_rrs", check="www") == 2
        assert value(found, "probe_failed_due_to_regex", check="ssh") == 0
        assert value(found, "uptime_agent_probe_phase_seconds", check="ssh", type="tcp", phase="tls") == 0
        assert 0 < value(found, "probe_icmp_duration_seconds", check="ping", phase="rtt") < 0.3
        assert value(found, "uptime_agent_icmp_echo_rtt_seconds_count", check="ping") >= 2
        # a journey: each step, the one not run too
        assert value(found, "uptime_agent_journey_step_success", check="flow", step="page") == 1
        assert value(found, "uptime_agent_journey_step_success", check="flow", step="broken") == 0
        assert value(found, "uptime_agent_journey_step_success", check="flow", step="never") == 0
        assert math.isnan(value(found, "uptime_agent_journey_step_duration_seconds", check="flow", step="never"))
        # bounded label values: check names, types, phases and step names only (never a URL)
        allowed = {"check", "type", "phase", "step", "result", "agent", "reason", "le"}
        for (_, labels), _ in found.items():
            for key, label in labels:
                assert key in allowed, key
                assert "://" not in label
        if shutil.which("promtool") or os.environ.get("CI"):
            linted = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert linted.returncode == 0, linted.stdout + linted.stderr

        # the check removed: all of its series go with it
        remaining = [c for c in parse_checks(local_checks(targets)) if c.name != "site"]
        await agent.apply_checks(remaining)
        after = samples(agent.metrics.exposition().decode())
        assert not [key for key in after if ("check", "site") in key[1]]
    finally:
        await agent.stop(timeout=1)
        await collector.stop()


async def test_every_phase_is_set_at_every_probe_even_a_failed_one():
    metrics = AgentMetrics("a1")
    check = parse_checks([{"name": "down", "type": "http", "url": "http://127.0.0.1:9/", "timeout": "500ms"}])[0]
    metrics.add_check("down", "http", check)
    outcome = await run_probe(check)
    assert outcome.error == "connect"
    metrics.observe_probe("down", "http", outcome.error, outcome.ok, 0.01, 0.0, outcome)
    found = samples(metrics.exposition().decode())
    for phase in HTTP_PHASES:
        assert value(found, "probe_http_duration_seconds", check="down", phase=phase) is not None, phase
    assert value(found, "probe_http_duration_seconds", check="down", phase="transfer") == 0
    assert value(found, "probe_http_status_code", check="down") == 0
    assert value(found, "probe_success", check="down", type="http") == 0
    # no certificate was seen: no expiry series (a 0 would read as "expired in 1970")
    assert value(found, "probe_ssl_earliest_cert_expiry", check="down") is None


def test_before_the_first_probe_no_blackbox_series_claims_a_result():
    metrics = AgentMetrics("a1")
    metrics.add_check("fresh", "http")
    found = samples(metrics.exposition().decode())
    assert value(found, "probe_success", check="fresh", type="http") is None
    assert value(found, "uptime_agent_probe_phase_seconds", check="fresh", type="http", phase="tls") == 0


async def test_phase_names_are_blackbox_exporters():
    assert http.PHASES == ("resolve", "connect", "tls", "processing", "transfer")
