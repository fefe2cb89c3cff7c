"""`uptime-agent probe`: every configured check run once against real loopback servers, each
result printed with its phases, its failure's reason and a journey's steps; exit 0 when all
succeed, 1 when one fails, 2 on a config error."""
from __future__ import annotations

import json
import socketserver
import subprocess
import threading

import pytest
import yaml
from click.testing import CliRunner
from probers_helpers import PASSWORD, Certificates, DnsServer, ThreadedServer, api_app
from test_e2e_fleet import console_script

from agent.cli import main

BASE_KEYS = {"check", "type", "ok", "error", "detail", "latency_ms", "degraded", "status_code", "phases"}


class _Banner(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"220 mail.example.test ESMTP\r\n")


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    certs = Certificates(tmp_path_factory.mktemp("cli-certs"))
    api = ThreadedServer(api_app()).start()
    site = ThreadedServer(api_app(), certs.server_context(certs.good)).start()
    dns = DnsServer().start()
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Banner)
    smtp.daemon_threads = True
    threading.Thread(target=smtp.serve_forever, daemon=True).start()
    yield {"certs": certs, "api": api, "site": site, "dns": dns, "smtp_port": smtp.server_address[1]}
    smtp.shutdown()
    smtp.server_close()
    dns.stop()
    site.stop()
    api.stop()


def checks_of(targets, password: str = PASSWORD) -> list[dict]:
    api = targets["api"].url
    return [
        {"name": "site", "type": "http", "interval": "60s", "url": f"{targets['site'].url}/html",
         "min_cert_days": 14, "degraded_after": "2s", "tls_ca_file": targets["certs"].ca_file},
        {"name": "smtp", "type": "tcp", "interval": "60s", "timeout": "2s", "host": "127.0.0.1",
         "port": targets["smtp_port"], "send": "", "expect": "^220 ", "tls": False},
        {"name": "dns-www", "type": "dns", "interval": "60s", "timeout": "2s", "query": "www.example.test",
         "record": "A", "server": targets["dns"].address, "expect_rcode": "NOERROR", "expect_answers": ["192.0.2.10"]},
        {"name": "login", "type": "journey", "interval": "60s", "timeout": "5s", "steps": [
            {"name": "sign-in", "method": "POST", "url": f"{api}/api/login",
             "json": {"user": "alice", "password": password},
             "assert": [{"status": 200}, {"jsonpath": "$.token", "exists": True}],
             "extract": {"token": {"jsonpath": "$.token"}}},
            {"name": "profile", "url": f"{api}/api/me", "headers": {"Authorization": "Bearer ${token}"},
             "assert": [{"status": 200}, {"body_regex": "alice"}, {"max_latency": "2s"}]},
        ]},
    ]


def agent_file(tmp_path, checks, name="agent.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"collector": {"url": "http://127.0.0.1:9"}, "checks": checks}))
    return str(path)


def run_cli(*args):
    return CliRunner().invoke(main, ["probe", *args], catch_exceptions=False)


def test_every_check_is_probed_once_and_printed_as_json(targets, tmp_path):
    result = run_cli("--config", agent_file(tmp_path, checks_of(targets)), "--format", "json")
    assert result.exit_code == 0, result.output
    shown = {entry["check"]: entry for entry in json.loads(result.stdout)}
    assert list(shown) == ["site", "smtp", "dns-www", "login"]
    for entry in shown.values():
        assert BASE_KEYS <= set(entry)
        assert (entry["ok"], entry["error"], entry["degraded"]) == (True, None, False), entry
        assert entry["latency_ms"] > 0
    site = shown["site"]
    assert set(site["phases"]) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert site["phases"]["tls"] > 0
    assert site["cert_not_after"] == targets["certs"].good_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 89.9 < site["cert_days_left"] < 90.1 and site["cert_verified"] is True
    assert (site["status_code"], site["redirects"], site["final_url"]) == (200, 0, f"{targets['site'].url}/html")
    assert set(shown["smtp"]["phases"]) == {"resolve", "connect", "tls"}
    assert shown["smtp"]["cert_not_after"] is None
    assert (shown["dns-www"]["rcode"], shown["dns-www"]["answers"]) == ("NOERROR", ["192.0.2.10", "192.0.2.11"])
    assert set(shown["dns-www"]["phases"]) == {"lookup"}
    login = shown["login"]
    assert login["failed_step"] is None
    assert [(s["name"], s["ok"], s["error"], s["status_code"]) for s in login["steps"]] == [
        ("sign-in", True, None, 200), ("profile", True, None, 200)]
    assert all({"name", "ok", "error", "detail", "status_code", "latency_ms"} <= set(s) for s in login["steps"])


def test_a_failing_journey_exits_1_and_shows_each_step(targets, tmp_path):
    result = run_cli("--config", agent_file(tmp_path, checks_of(targets, password="wrong-one")))
    assert result.exit_code == 1, result.output
    text = result.stdout
    assert "login    journey  FAIL assertion" in text
    assert "  detail     step 'sign-in': assertion 1 (status 200): status is 401" in text
    assert "  step 1     sign-in: FAIL assertion" in text
    assert "  not run    profile" in text
    assert "  phases     resolve " in text and "  answers    192.0.2.10, 192.0.2.11" in text
    assert text.rstrip().endswith("3 ok, 1 failed")
    assert "wrong-one" not in text


def test_check_selects_and_an_unknown_name_is_a_config_error(targets, tmp_path):
    config = agent_file(tmp_path, checks_of(targets, password="wrong-one"))
    chosen = run_cli("--config", config, "--check", "dns-www", "--check", "smtp", "--format", "json")
    assert chosen.exit_code == 0, chosen.output
    assert [e["check"] for e in json.loads(chosen.stdout)] == ["smtp", "dns-www"]
    unknown = run_cli("--config", config, "--check", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == f"{config}: --check: no check named 'nope' (checks: dns-www, login, site, smtp)"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"checks": [{"name": "x", "type": "tcp", "host": "h", "port": 70000}]},
         "checks.0.port: input should be less than or equal to 65535, got 70000"),
        ({"collector": {"url": "http://127.0.0.1:9"}, "checks": [{"name": "x", "type": "dns", "qery": "a"}]},
         "checks.0.query: required key missing"),
        ({"collector": {"url": "http://127.0.0.1:9"}},
         "checks: none in this file (this agent gets them from the collector); list them under checks: to probe them"),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path, content, message):
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(content))
    result = run_cli("--config", str(path))
    assert result.exit_code == 2
    assert f"{path}: {message}" in result.stderr.splitlines()
    assert "Traceback" not in result.output


def test_the_installed_command_with_a_file_of_checks_alone(targets, tmp_path):
    path = tmp_path / "checks.yml"
    path.write_text(yaml.safe_dump({"checks": checks_of(targets)[1:3]}))
    done = subprocess.run([console_script("uptime-agent"), "probe", "--config", str(path), "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [(e["check"], e["ok"]) for e in json.loads(done.stdout)] == [("smtp", True), ("dns-www", True)]
    assert done.stderr == ""
