"""Certificates of HTTPS checks, with certificates made for the tests (trustme): the presented
chain's expiry is recorded, an invalid chain or a certificate for another host fails with `tls`,
and `min_cert_days` fails a chain that ends too soon with `cert_expiry`."""
from __future__ import annotations

import pytest
from agent_helpers import Server
from aiohttp import web
from probers_helpers import Certificates, check

from agent.probers import http, tls


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp("tls-certs"))


def hello_app() -> web.Application:
    app = web.Application()

    async def hello(request):
        return web.Response(text="hello")

    async def to_plain(request):
        raise web.HTTPFound(request.query["to"])

    app.router.add_get("/", hello)
    app.router.add_get("/away", to_plain)
    return app


@pytest.fixture
async def serve(certs):
    servers: list[Server] = []

    async def start(leaf_name: str) -> Server:
        server = await Server(hello_app(), certs.server_context(getattr(certs, leaf_name))).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def https_check(url: str, certs: Certificates, **fields):
    return check(type="http", url=url, tls_ca_file=certs.ca_file, timeout="2s", **fields)


async def test_a_valid_chain_is_recorded_with_its_expiry_and_tls_phase(serve, certs):
    server = await serve("good")
    result = await http.probe(https_check(f"{server.url}/", certs, min_cert_days=14))
    assert (result.ok, result.status_code) == (True, 200)
    cert = result.cert
    assert (cert.not_after, cert.leaf_not_after, cert.subject, cert.verified) == (
        certs.good_until, certs.good_until, "localhost", True)
    assert cert.issuer.startswith("OU=Testing CA")
    assert result.to_wire()["cert_not_after"] == certs.good_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.phases["tls"] > 0 and result.phases["connect"] > 0
    assert result.phases["processing"] > 0


@pytest.mark.parametrize(
    ("leaf", "fields", "reason", "detail"),
    [
        ("wrong_host", {}, "tls", "certificate verify failed: IP address mismatch, certificate is not valid for "
                                  "'127.0.0.1'."),
        ("stranger", {}, "tls", "certificate verify failed: unable to get local issuer certificate"),
        ("expiring", {"min_cert_days": 14}, "cert_expiry", "certificate '127.0.0.1' expires in 3.0 days"),
        ("expiring", {"min_cert_days": 14, "tls_verify": False}, "cert_expiry", "certificate '127.0.0.1' expires in 3.0"),
        ("expiring", {"min_cert_days": 2}, None, None),
        ("expiring", {}, None, None),
        ("wrong_host", {"tls_verify": False}, None, None),
    ],
)
async def test_chain_host_and_expiry_decide(serve, certs, leaf, fields, reason, detail):
    server = await serve(leaf)
    result = await http.probe(https_check(f"{server.url}/", certs, **fields))
    assert (result.ok, result.error) == (reason is None, reason), result.detail
    if detail is not None:
        assert result.detail.startswith(detail), result.detail
    # the presented chain is recorded whatever the verdict, refused chains too
    assert result.cert is not None
    assert result.cert.verified is (reason != "tls" and fields.get("tls_verify", True))
    if leaf == "expiring":
        assert result.cert.not_after == certs.expiring_at


async def test_the_cert_expiry_failure_names_the_date_and_the_threshold(serve, certs):
    server = await serve("expiring")
    result = await http.probe(https_check(f"{server.url}/", certs, min_cert_days=14))
    stamp = certs.expiring_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.detail == f"certificate '127.0.0.1' expires in 3.0 days ({stamp}), fewer than min_cert_days 14"
    assert result.status_code == 200  # the response came; the certificate is what fails


async def test_the_system_trust_store_does_not_know_the_test_ca(serve, certs):
    server = await serve("good")
    result = await http.probe(check(type="http", url=f"{server.url}/", timeout="2s"))
    assert (result.ok, result.error) == (False, "tls")
    assert result.detail == "certificate verify failed: unable to get local issuer certificate"


async def test_an_unreadable_ca_file_fails_with_tls(tmp_path):
    result = await http.probe(check(type="http", url="https://127.0.0.1:9/", tls_ca_file=str(tmp_path / "none.pem")))
    assert (result.ok, result.error) == (False, "tls")
    assert result.detail.startswith(f"cannot use tls_ca_file '{tmp_path / 'none.pem'}'")


async def test_the_certificate_is_the_last_responses(serve, certs):
    # https -> http redirect: the final response spoke no TLS, so no certificate is reported for it
    server = await serve("good")
    plain = await Server(hello_app()).start()
    try:
        result = await http.probe(https_check(f"{server.url}/away?to={plain.url}/", certs))
    finally:
        await plain.stop()
    assert (result.ok, result.redirects, result.final_url) == (True, 1, f"{plain.url}/")
    assert result.cert is None
    assert result.phases["tls"] > 0  # summed over the hops, as blackbox_exporter sums them


def test_expiry_problem_counts_days_from_now(certs):
    from datetime import timedelta

    from agent.probers.result import CertInfo

    end = certs.expiring_at
    info = CertInfo(end, end + timedelta(days=300), "leaf.example", "CA", True)
    assert tls.expiry_problem(info, 2, now=end - timedelta(days=3)) is None
    assert tls.expiry_problem(info, 4, now=end - timedelta(days=3)).startswith(
        "a certificate in the chain of 'leaf.example' expires in 3.0 days")
    assert "expired 1.0 days ago" in tls.expiry_problem(info, 1, now=end + timedelta(days=1))
    assert tls.expiry_problem(info, None) is None


def test_min_cert_days_needs_https_and_a_sane_number():
    from protocol.checks import ConfigError, parse_checks

    for fields, message in (
        ({"url": "http://a.example/", "min_cert_days": 14},
         "checks.0.min_cert_days: url 'http://a.example/' is not https: there is no certificate to check"),
        ({"url": "https://a.example/", "min_cert_days": 0},
         "checks.0.min_cert_days: input should be greater than or equal to 1, got 0"),
        ({"url": "https://a.example/", "tls_ca_file": ""},
         "checks.0.tls_ca_file: must be the path of a PEM file of CA certificates"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_checks([{"name": "c", "type": "http", **fields}])
        assert str(caught.value) == message
