"""Real servers on loopback for the TCP, DNS, TLS and journey probers' tests: certificates made
for the tests (trustme), a DNS server (dnslib), line-based TCP servers, a JSON API.

Imported by tests/test_probers_*.py, tests/test_agent_probe_cli.py and
tests/test_agent_metrics_blackbox.py. Everything listens on 127.0.0.1, port 0.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import agent_helpers  # noqa: F401  (puts the repository on sys.path)
import trustme
from aiohttp import web
from dnslib import AAAA, CNAME, MX, NS, QTYPE, RCODE, RR, SOA, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from protocol.checks import parse_checks


def check(**fields):
    """One validated check: `check(type="tcp", host=..., port=...)` (interval 10s unless given)."""
    return parse_checks([{"name": "t", "interval": "10s", **fields}])[0]


# --- certificates -----------------------------------------------------------------------------


class Certificates:
    """A test CA (its PEM in `ca_file`) and server contexts for 127.0.0.1: valid, expiring in a
    few days, made for another host, and one from a CA nobody trusts."""

    def __init__(self, directory: Path):
        self.ca = trustme.CA()
        self.ca_file = str(directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self.good_until = now + timedelta(days=90)
        self.good = self.ca.issue_cert("127.0.0.1", "localhost", not_after=self.good_until)
        self.expiring_at = now + timedelta(days=3)
        self.expiring = self.ca.issue_cert("127.0.0.1", not_after=self.expiring_at)
        self.wrong_host = self.ca.issue_cert("other.example.test")
        self.stranger = trustme.CA().issue_cert("127.0.0.1")

    @staticmethod
    def server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        return context


# --- TCP --------------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpServer:
    """asyncio.start_server on 127.0.0.1 with `handler` per connection (optionally TLS)."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None):
        self._handler = handler
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> TcpServer:
        async def handle(reader, writer):
            self.connections += 1
            task = asyncio.current_task()
            self._handlers.add(task)
            try:
                await self._handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, asyncio.CancelledError):
                pass
            finally:
                self._handlers.discard(task)
                writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):  # a handler still waiting would outlive the test
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()


def banner(text: bytes, *, delay: float = 0.0, then_wait: float = 0.0) -> Handler:
    async def handler(reader, writer):
        if delay:
            await asyncio.sleep(delay)
        writer.write(text)
        await writer.drain()
        if then_wait:
            await asyncio.sleep(then_wait)
    return handler


async def echo_upper(reader, writer) -> None:
    """Answers each line with `+LINE` upper-cased: PING -> +PING."""
    while line := await reader.readline():
        writer.write(b"+" + line.upper())
        await writer.drain()


def smtp(tls_context: ssl.SSLContext | None, *, offer_starttls: bool = True) -> Handler:
    """Enough SMTP (RFC 5321, RFC 3207) for a STARTTLS probe: greeting, EHLO, STARTTLS, EHLO."""

    async def handler(reader, writer):
        writer.write(b"220 mail.example.test ESMTP ready\r\n")
        secured = False
        while line := await reader.readline():
            command = line.decode().strip().upper()
            if command.startswith("EHLO"):
                extensions = [b"SIZE 1000000"] + ([b"STARTTLS"] if offer_starttls and not secured else [])
                reply = b"250-mail.example.test\r\n" + b"".join(
                    (b"250 " if i == len(extensions) - 1 else b"250-") + e + b"\r\n" for i, e in enumerate(extensions))
                writer.write(reply)
            elif command == "STARTTLS" and offer_starttls and tls_context is not None:
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(tls_context)
                secured = True
                continue
            elif command == "STARTTLS":
                writer.write(b"454 TLS not available\r\n")
            elif command == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 unknown\r\n")
            await writer.drain()
    return handler


def imap(tls_context: ssl.SSLContext) -> Handler:
    async def handler(reader, writer):
        writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
        while line := await reader.readline():
            tag, _, command = line.decode().strip().partition(" ")
            if command.upper() == "STARTTLS":
                writer.write(b"* OK begin\r\n" + tag.encode() + b" OK begin TLS now\r\n")
                await writer.drain()
                await writer.start_tls(tls_context)
            else:
                writer.write(tag.encode() + b" OK done\r\n")
                await writer.drain()
    return handler


# --- DNS --------------------------------------------------------------------------------------

ZONE = {
    ("www.example.test.", "A"): [A("192.0.2.10"), A("192.0.2.11")],
    ("www.example.test.", "AAAA"): [AAAA("2001:db8::10")],
    ("alias.example.test.", "CNAME"): [CNAME("www.example.test.")],
    ("example.test.", "MX"): [MX("mail.example.test.", 10)],
    ("example.test.", "TXT"): [TXT("v=spf1 -all")],
    ("example.test.", "NS"): [NS("ns1.example.test."), NS("ns2.example.test.")],
    ("example.test.", "SOA"): [SOA("ns1.example.test.", "hostmaster.example.test.", (2026112501, 3600, 600, 86400, 300))],
    # 60 addresses: more than fits a 512-byte UDP answer (served truncated over UDP, whole over TCP)
    ("big.example.test.", "A"): [A(f"198.51.100.{i}") for i in range(1, 61)],
}


class ZoneResolver(BaseResolver):
    """Answers from ZONE; NXDOMAIN for names it does not hold; `refused.` gets REFUSED;
    `slow.` answers after SLOW_SECONDS; `big.` is truncated over UDP. Records the protocol of
    each query it answered in `seen`."""

    SLOW_SECONDS = 1.5

    def __init__(self):
        self.seen: list[tuple[str, str, str]] = []  # (name, type, udp|tcp)

    def resolve(self, request, handler):
        name, qtype = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        self.seen.append((name, qtype, handler.protocol))
        reply = request.reply()
        if name.startswith("slow."):
            time.sleep(self.SLOW_SECONDS)
        if name.startswith("refused."):
            reply.header.rcode = RCODE.REFUSED
            return reply
        records = ZONE.get((name, qtype))
        if records is None and not any(n == name for n, _ in ZONE) and not name.startswith("slow."):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rdata in records or ([A("192.0.2.99")] if name.startswith("slow.") and qtype == "A" else []):
            reply.add_answer(RR(name, getattr(QTYPE, qtype), rdata=rdata, ttl=60))
        if handler.protocol == "udp" and len(reply.pack()) > 512:
            return reply.truncate()
        return reply


class DnsServer:
    """dnslib's server on 127.0.0.1, UDP and TCP on the same port, in threads."""

    def __init__(self):
        self.resolver = ZoneResolver()
        quiet = DNSLogger(logf=lambda *_: None)
        self.udp = DNSServer(self.resolver, address="127.0.0.1", port=0, logger=quiet)
        self.port = self.udp.server.server_address[1]
        self.tcp = DNSServer(self.resolver, address="127.0.0.1", port=self.port, tcp=True, logger=quiet)

    def start(self) -> DnsServer:
        self.udp.start_thread()
        self.tcp.start_thread()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.stop()
            server.server.server_close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# --- a JSON API for journeys ------------------------------------------------------------------

PASSWORD = "correct-horse-battery"
TOKEN_PREFIX = "tok-"


def api_app() -> web.Application:
    """POST /api/login {user, password} -> {"token"} and a session cookie (401 otherwise);
    GET /api/me with `Authorization: Bearer <token>` -> {"user", "roles"}, echoing the header in
    X-Echo; /api/session needs the cookie; /api/slow?s=; /api/error 500; /go redirects to /api/me;
    /big ~2 MB ending in END; /html answers text with an id="order-NNN"."""
    app = web.Application()
    tokens: dict[str, str] = {}

    async def login(request):
        body = await request.json()
        if body.get("user") != "alice" or body.get("password") != PASSWORD:
            return web.json_response({"error": "bad credentials", "echo": body.get("password")}, status=401)
        token = f"{TOKEN_PREFIX}{len(tokens) + 1:04d}-secretpart"
        tokens[token] = "alice"
        response = web.json_response({"token": token, "expires_in": 3600})
        response.set_cookie("session", "s-" + token)
        return response

    async def me(request):
        auth = request.headers.get("Authorization", "")
        user = tokens.get(auth.removeprefix("Bearer "))
        headers = {"X-Echo": auth}
        if user is None:
            return web.json_response({"error": "no token"}, status=401, headers=headers)
        return web.json_response({"user": user, "roles": ["admin", "ops"], "id": 42}, headers=headers)

    async def session(request):
        cookie = request.cookies.get("session", "")
        if cookie.removeprefix("s-") not in tokens:
            return web.json_response({"error": "no session"}, status=403)
        return web.json_response({"ok": True})

    async def slow(request):
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"slow": True})

    async def error(request):
        return web.json_response({"error": "boom"}, status=500)

    async def go(request):
        raise web.HTTPFound("/api/me")

    async def big(request):
        return web.Response(body=b"x" * (2 * 1024 * 1024) + b"END")

    async def html(request):
        return web.Response(text='<p id="order-314">Order 314</p>', content_type="text/html",
                            headers={"X-Request-Id": "req-777"})

    app.router.add_post("/api/login", login)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/session", session)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/error", error)
    app.router.add_get("/go", go)
    app.router.add_get("/big", big)
    app.router.add_get("/html", html)
    return app


class ThreadedServer:
    """An aiohttp application served from a thread of its own (its own event loop), so that one
    server can be shared by a module's tests, each of which runs in its own loop."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None):
        import threading

        self._app = app
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl).start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)

        async def cancel_the_rest() -> None:  # handlers still sleeping (a slow endpoint) end here
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_the_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"
