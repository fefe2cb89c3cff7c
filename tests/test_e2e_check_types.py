"""End to end for each check type (https with a certificate made for the test, tcp, dns,
journey): validated by the admin API as by the config, `uptime-collector serve` assigns them, an `uptime-agent run` process probes real
loopback servers, the results (with their details) reach the collector, the targets fail for a few
rounds, and each check's policy gets exactly the outage window it should."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import yaml
from agent_helpers import Server
from aiohttp import web
from dnslib import RCODE
from probers_helpers import PASSWORD, Certificates, DnsServer, TcpServer, ZoneResolver
from test_e2e_fleet import console_script, free_port, get_json, stop, wait_http

pytestmark = pytest.mark.e2e

AGENT = "a1"
TOKEN = "e2e-token-a1-0123456789"
ADMIN = "e2e-admin-token-0123456789"
INTERVAL = 1.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CHECKS = ("site", "smtp", "dns-www", "login")
FAILURE = {"site": "status", "smtp": "expect", "dns-www": "rcode", "login": "assertion"}


class Targets:
    """The four targets, all failing at once while `down` is set."""

    def __init__(self, certs: Certificates):
        self.down = False
        app = web.Application()
        app.router.add_get("/site", self._site)
        app.router.add_post("/api/login", self._login)
        app.router.add_get("/api/me", self._me)
        self.web = Server(app, certs.server_context(certs.good))
        self.smtp = TcpServer(self._banner)
        targets = self

        class Flaky(ZoneResolver):
            def resolve(self, request, handler):
                reply = super().resolve(request, handler)
                if targets.down:
                    reply = request.reply()
                    reply.header.rcode = RCODE.SERVFAIL
                return reply

        self.dns = DnsServer()
        self.dns.resolver = self.dns.udp.server.resolver = self.dns.tcp.server.resolver = Flaky()

    async def _site(self, request):
        return web.Response(status=503 if self.down else 200, text="site")

    async def _login(self, request):
        body = await request.json()
        if body.get("password") != PASSWORD:
            return web.json_response({"error": "bad credentials"}, status=401)
        return web.json_response({"token": "tok-e2e-0001"})

    async def _me(self, request):
        if self.down or request.headers.get("Authorization") != "Bearer tok-e2e-0001":
            return web.json_response({"error": "unavailable"}, status=503)
        return web.json_response({"user": "alice"})

    async def _banner(self, reader, writer):
        writer.write(b"554 no service\r\n" if self.down else b"220 mail.example.test ESMTP\r\n")
        await writer.drain()

    async def start(self) -> None:
        await self.web.start()
        await self.smtp.start()
        self.dns.start()

    async def stop(self) -> None:
        self.dns.stop()
        await self.smtp.stop()
        await self.web.stop()


def slot_of(moment: datetime) -> datetime:
    ms = int((moment - EPOCH) / timedelta(milliseconds=1))
    return EPOCH + timedelta(milliseconds=ms // int(INTERVAL * 1000) * int(INTERVAL * 1000))


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()))


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def checks_config(t: Targets, ca_file: str) -> list[dict]:
    rule = {"quorum": "all", "min_duration": "2s"}
    api = t.web.url
    return [
        {"name": "site", "type": "http", "interval": "1s", "timeout": "800ms", "url": f"{api}/site",
         "tls_ca_file": ca_file, "min_cert_days": 14, "degraded_after": "700ms", "outage": rule},
        {"name": "smtp", "type": "tcp", "interval": "1s", "timeout": "800ms", "host": "127.0.0.1",
         "port": t.smtp.port, "expect": "^220 ", "outage": rule},
        {"name": "dns-www", "type": "dns", "interval": "1s", "timeout": "800ms", "query": "www.example.test",
         "record": "A", "server": t.dns.address, "expect_answers": ["192.0.2.10"], "outage": rule},
        {"name": "login", "type": "journey", "interval": "1s", "timeout": "800ms", "tls_ca_file": ca_file,
         "outage": rule, "steps": [
             {"name": "sign-in", "method": "POST", "url": f"{api}/api/login",
              "json": {"user": "alice", "password": PASSWORD},
              "assert": [{"status": 200}, {"jsonpath": "$.token", "exists": True}],
              "extract": {"token": {"jsonpath": "$.token"}}},
             {"name": "profile", "url": f"{api}/api/me", "headers": {"Authorization": "Bearer ${token}"},
              "assert": [{"status": 200}, {"jsonpath": "$.user", "equals": "alice"}]},
         ]},
    ]


async def wait_until_up(base: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    wanted = [f'uptime_collector_probe_success{{agent="{AGENT}",check="{name}"}} 1.0' for name in CHECKS]
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            missing = [w for w in wanted if w not in text]
            if not missing:
                return
            assert asyncio.get_running_loop().time() < deadline, f"not up at the collector: {missing}"
            await asyncio.sleep(0.2)


async def test_each_check_type_reaches_the_collector_and_opens_its_window(tmp_path: Path) -> None:
    certs = Certificates(tmp_path)
    targets = Targets(certs)
    await targets.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = tmp_path / "collector.sqlite"
    (tmp_path / "collector.yml").write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite+aiosqlite:///{database}",
        "evaluation": {"interval": "250ms", "grace": "1500ms"},
        "admin_token": ADMIN,
        "agents": [{"id": AGENT, "token": TOKEN}],
        "checks": checks_config(targets, certs.ca_file),
    }))
    (tmp_path / "agent.yml").write_text(yaml.safe_dump({
        "collector": {"url": base, "flush_interval": "200ms", "heartbeat_interval": "2s"},
        "metrics": {"listen": "127.0.0.1:0"},
        "spool": {"path": str(tmp_path / "spool-{agent_id}.sqlite")},
        "guard": {"block_private": False},  # the assigned checks probe 127.0.0.1
    }))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [console_script("uptime-collector"), "serve", "--config", str(tmp_path / "collector.yml")],
            stdout=open(logs / "collector.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path))
        try:
            await asyncio.wait_for(wait_http(f"{base}/healthz"), 30)
        except (AssertionError, TimeoutError):
            raise AssertionError(f"the collector did not come up: {(logs / 'collector.log').read_text()[-2000:]}")
        procs.append(subprocess.Popen(
            [console_script("uptime-agent"), "run", "--config", str(tmp_path / "agent.yml"), "--id", AGENT],
            env={**os.environ, "UPTIME_AGENT_TOKEN": TOKEN},
            stdout=open(logs / f"{AGENT}.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path))
        await wait_until_up(base)

        # the admin API validates each type as the config does, naming the field
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession(base) as http:
            for body, message in (
                ({"type": "tcp", "interval": "1s", "host": "127.0.0.1", "port": 70000},
                 "port: input should be less than or equal to 65535, got 70000"),
                ({"type": "dns", "interval": "1s", "query": "www.example.test", "record": "PTR"},
                 "record: input should be 'A', 'AAAA', 'CNAME', 'MX', 'TXT', 'NS' or 'SOA', got 'PTR'"),
                ({"type": "journey", "interval": "1s", "timeout": "800ms", "steps": [
                    {"name": "me", "url": f"{targets.web.url}/api/me", "headers": {"Authorization": "Bearer ${t}"}}]},
                 "steps.0.headers.Authorization: uses ${t}, which no earlier step extracts"),
                ({"type": "http", "interval": "1s", "timeout": "800ms", "url": f"{targets.web.url}/",
                  "degraded_after": "1s"},
                 "degraded_after: degraded_after 1s must be less than timeout 800ms (a probe that slow fails with "
                 "timeout)"),
            ):
                async with http.put("/api/v1/checks/bad", json=body, headers=admin) as resp:
                    assert (resp.status, (await resp.json())["error"]) == (422, message)

        # every target fails for four rounds, mid-slot to mid-slot: four FAILED rounds, one window each
        step = timedelta(seconds=INTERVAL)
        start = slot_of(datetime.now(timezone.utc)) + 2 * step
        await sleep_until(start - step / 2)
        targets.down = True
        await sleep_until(start + 3 * step + step / 2)
        targets.down = False
        await sleep_until(start + 6 * step)

        deadline = asyncio.get_running_loop().time() + 20
        windows: dict[str, list] = {}
        while True:
            for name in CHECKS:
                windows[name] = (await get_json(f"{base}/api/v1/outages", policy=name))["outages"]
            if all(w and all(x["end"] for x in w) for w in windows.values()):
                break
            assert asyncio.get_running_loop().time() < deadline, (windows, (logs / "collector.log").read_text()[-3000:])
            await asyncio.sleep(0.25)
        for name in CHECKS:
            assert [(w["start"], w["end"]) for w in windows[name]] == [(z(start), z(start + 4 * step))], name
            evidence = windows[name][0]["evidence"]
            for r in evidence["rounds"] if isinstance(evidence, dict) else evidence:
                assert r["components"][name]["failed"] == [AGENT], (name, r)
    finally:
        stop(procs[1:])
        stop(procs[:1])
        await targets.stop()
    for p in procs:
        assert p.returncode == 0, f"{p.args[0]} exited with {p.returncode}"
    assert "Traceback" not in (logs / f"{AGENT}.log").read_text()
    assert PASSWORD not in (logs / f"{AGENT}.log").read_text() + (logs / "collector.log").read_text()

    # the details each type reports were stored with the results, as the agent sent them
    with sqlite3.connect(database) as db:
        rows = db.execute('SELECT "check", ok, error, extra FROM results WHERE agent_id = ?', (AGENT,)).fetchall()
    by_check: dict[str, list] = {}
    for check, ok, error, extra in rows:
        by_check.setdefault(check, []).append((bool(ok), error, json.loads(extra) if extra else {}))
    for name in CHECKS:
        assert {error for ok, error, _ in by_check[name] if not ok} == {FAILURE[name]}, name
    ok_site = next(extra for ok, _, extra in by_check["site"] if ok)
    assert set(ok_site["phases"]) == {"resolve", "connect", "tls", "processing", "transfer"}
    assert ok_site["cert_not_after"].startswith(certs.good_until.strftime("%Y-%m-%dT%H:%M:%S"))
    assert (ok_site["redirects"], ok_site["final_url"]) == (0, f"{targets.web.url}/site")
    assert set(next(e for ok, _, e in by_check["smtp"] if ok)["phases"]) == {"resolve", "connect", "tls"}
    dns_ok = next(e for ok, _, e in by_check["dns-www"] if ok)
    assert (dns_ok["rcode"], dns_ok["answers"]) == ("NOERROR", ["192.0.2.10", "192.0.2.11"])
    assert next(e for ok, _, e in by_check["dns-www"] if not ok)["rcode"] == "SERVFAIL"
    login_failed = next(e for ok, _, e in by_check["login"] if not ok)
    assert login_failed["failed_step"] == "profile"
    assert [(s["name"], s["ok"], s["status_code"]) for s in login_failed["steps"]] == [
        ("sign-in", True, 200), ("profile", False, 503)]
