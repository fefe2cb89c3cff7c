"""A real Prometheus (Debian's package) on loopback scraping a real collector and six real agents,
configured from config/prometheus/prometheus.yml with only the targets and intervals changed:

* the collector's and the agents' live /metrics pass `promtool check metrics`;
* every query of the Grafana dashboard (panels, annotations, template variables) returns data
  through Prometheus's HTTP API, Grafana's variables replaced by concrete values;
* alerts.yml, loaded into that Prometheus, fires UptimeOutageVerified for the outage the test makes.

Timing is compressed through configuration only (2-second polls, a 4-second outage rule, 1-second
scrapes); the HTTP target is taken down for four rounds so that a verified window opens and closes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_e2e_fleet import console_script, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "uptime-verifier.json"
AGENTS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "sa-east")
INTERVAL = 2.0
SCRAPE = "1s"
RATE_INTERVAL = "4s"  # Grafana's $__rate_interval: 4 x the scrape interval
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

if PROMETHEUS is None or PROMTOOL is None:
    pytest.skip("prometheus and promtool (Debian package prometheus) are not installed", allow_module_level=True)



def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, urllib.error.URLError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition (labels in the order prometheus-client sorts them)."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{inner}}}" if labels else name
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


class Target:
    """An HTTP target on loopback that can be stopped (connection refused) and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None


def slot_after(moment: float, slots: int = 1) -> float:
    return (moment // INTERVAL + slots) * INTERVAL


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def live_prometheus_config(compose_config: dict, ports: dict[str, int], rules: Path) -> dict:
    """config/prometheus/prometheus.yml with compose host names mapped to loopback ports."""
    config = json.loads(json.dumps(compose_config))
    config["global"] = {**config.get("global", {}), "scrape_interval": SCRAPE, "scrape_timeout": SCRAPE,
                        "evaluation_interval": SCRAPE}
    config["rule_files"] = [str(rules)]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            mapped = []
            for target in static["targets"]:
                host, _, _port = target.rpartition(":")
                assert host in ports, f"prometheus.yml scrapes {target}: no such service in the test stack"
                mapped.append(f"127.0.0.1:{ports[host]}")
            static["targets"] = mapped
    return config


@dataclass
class Stack:
    prometheus: str
    collector: str
    agents: dict[str, str]
    started: float = 0.0
    ended: float = 0.0
    scrapes: dict[str, str] = field(default_factory=dict)
    logs: Path | None = None

    def api(self, path: str, **params: Any) -> dict:
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            body = json.loads(http_get(url, timeout=10))
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{path} {params}: HTTP {err.code}: {err.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:] if self.logs else ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("prometheus-live")
    logs = tmp / "logs"
    logs.mkdir()
    target = Target()
    target.up()
    ports = {"collector": free_port(), "localhost": free_port(),
             **{f"agent-{a}": free_port() for a in AGENTS}}
    collector = f"http://127.0.0.1:{ports['collector']}"
    tokens = {a: f"prom-token-{a}-0123456789" for a in AGENTS}
    started = time.time()
    # The contract policy starts now (`commenced`), so its month-to-date report covers only the test.
    (tmp / "sla.yml").write_text(yaml.safe_dump({
        "preset": "nexon-vision", "components": ["web"], "interval": INTERVAL, "min_duration": 2 * INTERVAL,
        "commenced": datetime.fromtimestamp(slot_after(started, -5), timezone.utc).isoformat(),
    }))
    (tmp / "collector.yml").write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": ports["collector"]},
        "database_url": f"sqlite+aiosqlite:///{tmp / 'collector.sqlite'}",
        "evaluation": {"interval": "250ms", "grace": "1500ms", "status_interval": "5s"},
        "agents": [{"id": a, "token": t} for a, t in tokens.items()],
        "checks": [{"name": "web", "type": "http", "interval": INTERVAL, "url": f"http://127.0.0.1:{target.port}/",
                    "timeout": "1s", "expected_status": [200], "outage": {"quorum": "all", "min_duration": "4s"}}],
        "policies": [{"name": "sla", "preset": str(tmp / "sla.yml")}],
    }))
    for a in AGENTS:
        (tmp / f"agent-{a}.yml").write_text(yaml.safe_dump({
            "collector": {"url": collector, "flush_interval": "200ms", "heartbeat_interval": "2s"},
            "metrics": {"listen": f"127.0.0.1:{ports[f'agent-{a}']}"},
            "spool": {"path": str(tmp / "spool-{agent_id}.sqlite")},
            "guard": {"block_private": False},  # the assigned checks probe 127.0.0.1
        }))
    compose_config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(
        live_prometheus_config(compose_config, ports, PROMETHEUS_DIR / "alerts.yml")))

    s = Stack(prometheus=f"http://127.0.0.1:{ports['localhost']}", collector=collector,
              agents={a: f"http://127.0.0.1:{ports[f'agent-{a}']}" for a in AGENTS}, started=started, logs=logs)
    procs: list[subprocess.Popen] = []
    prometheus_proc = None

    def phase(what: str) -> None:
        print(f"[{time.time() - started:5.1f} s] {what}")

    try:
        prometheus_proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{ports['localhost']}", "--log.level=warn"],
            stdout=open(logs / "prometheus.log", "w"), stderr=subprocess.STDOUT, cwd=tmp)
        procs.append(subprocess.Popen(
            [console_script("uptime-collector"), "serve", "--config", str(tmp / "collector.yml")],
            stdout=open(logs / "collector.log", "w"), stderr=subprocess.STDOUT, cwd=tmp))
        wait_until(lambda: http_get(f"{collector}/healthz"), 30, "the collector")
        phase("collector healthy")
        for a in AGENTS:
            procs.append(subprocess.Popen(
                [console_script("uptime-agent"), "run", "--config", str(tmp / f"agent-{a}.yml"), "--id", a],
                env={**os.environ, "UPTIME_AGENT_TOKEN": tokens[a]},
                stdout=open(logs / f"{a}.log", "w"), stderr=subprocess.STDOUT, cwd=tmp))
        wait_until(lambda: http_get(f"{s.prometheus}/-/ready"), 30, "Prometheus to be ready")

        def all_agents_up() -> bool:
            text = http_get(f"{collector}/metrics")
            return all(sample(text, "uptime_collector_probe_success", check="web", agent=a) == 1 for a in AGENTS)

        wait_until(all_agents_up, 30, "every agent's first successful probe at the collector")
        phase("six agents probing")

        # Down for four rounds (after one slot's probes are done, until after the fourth's).
        down_at = slot_after(time.time()) + 0.7
        sleep_until(down_at)
        target.down()

        def outage_open() -> str | None:
            text = http_get(f"{collector}/metrics", timeout=10)
            return text if sample(text, "uptime_collector_outage_open", policy="web") == 1 else None

        phase("target down")
        s.scrapes["collector-during-outage"] = wait_until(outage_open, 20, "the verified outage", interval=0.5)
        phase("outage verified")
        sleep_until(down_at + 4 * INTERVAL)
        target.up()
        phase("target up")

        def resolved() -> bool:
            text = http_get(f"{collector}/metrics", timeout=10)
            return (sample(text, "uptime_collector_outage_open", policy="web") == 0
                    and sample(text, "uptime_collector_outage_events_total", kind="resolved", policy="web") == 1
                    and (sample(text, "uptime_collector_policy_downtime_seconds", policy="sla") or 0) > 0)

        wait_until(resolved, 30, "the outage to close and the month-to-date gauges to count it", interval=0.5)
        phase("outage resolved, downtime counted")
        time.sleep(3)  # a few more scrapes and rule evaluations
        s.scrapes["collector-after-outage"] = http_get(f"{collector}/metrics", timeout=10)
        for a, url in s.agents.items():
            s.scrapes[f"agent-{a}"] = http_get(f"{url}/metrics")
        s.ended = time.time()
        yield s
    finally:
        stop(procs[1:])
        stop(procs[:1])
        if prometheus_proc is not None:
            stop([prometheus_proc])
        if target.server is not None:
            target.down()


def test_live_metrics_pass_promtool_check_metrics(stack: Stack) -> None:
    assert len(stack.scrapes) == 2 + len(AGENTS)
    for name, text in stack.scrapes.items():
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
            f"{name}: promtool check metrics:\n{proc.stdout}{proc.stderr}")
    # the families the alerts and the dashboard rely on were all in the scrapes that were checked
    during, after = stack.scrapes["collector-during-outage"], stack.scrapes["collector-after-outage"]
    assert sample(during, "uptime_collector_outage_start_timestamp_seconds", policy="web") is not None
    for family in ("policy_availability_ratio", "policy_target_ratio", "policy_allowed_downtime_seconds",
                   "policy_downtime_budget_remaining_seconds", "policy_downtime_seconds", "policy_data_coverage_ratio"):
        assert sample(after, f"uptime_collector_{family}", policy="sla") is not None, family
    assert sample(after, "uptime_collector_policy_target_ratio", policy="sla") == pytest.approx(0.995)
    # refreshed every status_interval: possibly while the window was still open, so only "some"
    assert sample(after, "uptime_collector_policy_downtime_seconds", policy="sla") > 0
    for a in AGENTS:
        assert sample(after, "uptime_collector_agent_clock_offset_seconds", agent=a) is not None
        assert sample(stack.scrapes[f"agent-{a}"], "uptime_agent_spool_results") is not None
    # every metric the alerting rules use is in a real scrape
    scraped = {m.group(1) for text in stack.scrapes.values() for m in re.finditer(r"^(\w+)[{ ]", text, re.M)}
    used = set(re.findall(r"\b(uptime_(?:collector|agent)_\w+)", (PROMETHEUS_DIR / "alerts.yml").read_text()))
    assert used and not used - scraped, sorted(used - scraped)


# --- the Grafana dashboard's queries -------------------------------------------------------------


def dashboard_queries(dashboard: dict) -> list[tuple[str, str, bool]]:
    """(where, expr, instant) for every Prometheus query in panels (rows included) and annotations."""
    queries = []

    def panels(items: list[dict]):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard["panels"]):
        for t in p.get("targets", []):
            queries.append((f"panel {p['title']!r} {t['refId']}", t["expr"], bool(t.get("instant"))))
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            queries.append((f"annotation {a['name']!r}", a["expr"], False))
    return queries


def substitute(expr: str, variables: dict[str, list[str]], range_seconds: int) -> str:
    builtins = {"__rate_interval": RATE_INTERVAL, "__interval": SCRAPE, "__range": f"{range_seconds}s",
                "__range_s": str(range_seconds)}

    def value(name: str) -> str:
        if name in builtins:
            return builtins[name]
        assert name in variables, f"{expr}: unknown variable ${name}"
        # Grafana's multi-value/All substitution inside a regex matcher: metacharacters escaped
        # with a backslash that is itself escaped in PromQL's double-quoted string
        return "(" + "|".join(re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in variables[name]) + ")"

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: value(m.group(1) or m.group(2)), expr)
    assert "$" not in out, out
    return out


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    start, end = stack.started, stack.ended
    span = int(end - start) + 1
    variables: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "datasource":  # picks the Prometheus itself; queries nothing
            assert var["query"] == "prometheus"
            continue
        assert var["type"] == "query", var["name"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]["query"])
        assert m, f"variable {var['name']}: unsupported query {var['query']['query']!r}"
        series = stack.api("series", **{"match[]": m.group(1)}, start=start, end=end)
        variables[var["name"]] = sorted({s[m.group(2)] for s in series if m.group(2) in s})
        assert variables[var["name"]], f"variable {var['name']}: {var['query']['query']} found no values"
    assert set(variables["agent"]) == set(AGENTS)
    assert {"web", "sla"} <= set(variables["policy"])

    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    empty = []
    results: dict[str, list[dict]] = {}
    for where, expr, instant in queries:
        concrete = substitute(expr, variables, span)
        if instant:
            data = stack.api("query", query=concrete, time=end)
            has_data = any(r["value"] for r in data["result"])
        else:
            data = stack.api("query_range", query=concrete, start=start, end=end, step=SCRAPE)
            has_data = any(r["values"] for r in data["result"])
        results[where] = data["result"]
        if not has_data:
            empty.append(f"{where}: {concrete}")
    assert not empty, "queries without data:\n" + "\n".join(empty)

    # and what they show is the outage the test made
    timeline = {r["metric"]["policy"]: [float(v) for _, v in r["values"]] for r in results["panel 'Outage timeline' A"]}
    assert 1.0 in timeline["web"] and 1.0 in timeline["sla"] and timeline["web"][-1] == 0.0
    verified = {r["metric"]["policy"]: float(r["value"][1]) for r in results["panel 'Outages verified in range' A"]}
    assert verified["web"] >= 1 and verified["sla"] >= 1
    latency = {r["metric"]["agent"] for r in results["panel 'Probe latency by agent' A"]}
    assert latency == set(AGENTS)
    annotations = results["annotation 'Verified outages'"]
    assert {r["metric"]["policy"] for r in annotations} >= {"web", "sla"}


def test_alert_rules_fire_in_a_live_prometheus(stack: Stack) -> None:
    rules = stack.api("rules", type="alert")
    loaded = {r["name"] for g in rules["groups"] for r in g["rules"]}
    expected = {r["alert"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert loaded == expected
    assert all(r["health"] == "ok" for g in rules["groups"] for r in g["rules"]), rules
    fired = stack.api("query_range", query='ALERTS{alertname="UptimeOutageVerified", alertstate="firing"}',
                      start=stack.started, end=stack.ended, step=SCRAPE)["result"]
    assert {r["metric"]["policy"] for r in fired} >= {"web", "sla"}, stack.tail("prometheus")
    fired_annotations = stack.api("alerts")  # resolved by now: no alert is still firing for web
    assert not [a for a in fired_annotations["alerts"]
                if a["labels"]["alertname"] == "UptimeOutageVerified" and a["labels"].get("policy") == "web"]
