"""TLS for the probers that speak it (HTTPS, journeys, TLS on TCP): client contexts, the chain the
server presented, and the certificate rules.

* `client_context(verify, ca_file)`: a cached client SSLContext. Verifying (the default) it checks
  the chain against the system's CAs (or `ca_file`) and the host name, so an invalid chain, an
  expired certificate or one for another host fails the handshake, reported as reason `tls`.
* The contexts are `TimedContext`s: asyncio wraps the TLS objects of a connection the moment its
  TCP connection is up, right before the handshake, and `wrap_bio` notes that moment in the list
  the running probe put in `HANDSHAKE_STARTS`. That splits an HTTPS connection's set-up into
  blackbox_exporter's `connect` and `tls` phases, which aiohttp's tracing gives only as one.
* `cert_info(ssl_object, verified)`: the presented chain's earliest expiry (what
  blackbox_exporter exports as probe_ssl_earliest_cert_expiry), the leaf's expiry and names.
* `expiry_problem(cert, min_cert_days)`: the `cert_expiry` failure's detail, or None.
"""
from __future__ import annotations

import contextvars
import functools
import os
import ssl
import time
from datetime import datetime

from protocol.timestamps import rfc3339, utcnow
from agent.probers.result import CertInfo

ENCODING_DER = 2  # _ssl.ENCODING_DER: Certificate.public_bytes() of the pre-3.13 chain getter

# The list that the running probe collects (perf_counter() time, SSLObject) of each handshake in.
HANDSHAKE_STARTS: contextvars.ContextVar[list | None] = contextvars.ContextVar("handshake_starts", default=None)


class TimedContext(ssl.SSLContext):
    """An SSLContext that notes when a connection's handshake begins, and its TLS object (whose
    certificates stay readable after aiohttp let go of a finished response's connection)."""

    def wrap_bio(self, *args, **kwargs):
        marks = HANDSHAKE_STARTS.get()
        started = time.perf_counter()
        ssl_object = super().wrap_bio(*args, **kwargs)
        if marks is not None:
            marks.append((started, ssl_object))
        return ssl_object


class CaFileError(Exception):
    """The check's tls_ca_file cannot be read or holds no certificate."""


@functools.lru_cache(maxsize=64)
def _context(verify: bool, ca_file: str | None, _stamp: int | None) -> TimedContext:
    context = TimedContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def client_context(verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """The client context for a check (shared: loading the system's CAs costs milliseconds). A
    changed ca_file is read again (the cache key holds its modification time)."""
    if not verify:
        return _context(False, None, None)
    if ca_file is None:
        return _context(True, None, None)
    try:
        stamp = os.stat(ca_file).st_mtime_ns
        return _context(True, ca_file, stamp)
    except (OSError, ssl.SSLError) as exc:
        raise CaFileError(f"cannot use tls_ca_file {ca_file!r}: {getattr(exc, 'strerror', None) or exc}") from None


def presented_chain(ssl_object) -> list[bytes]:
    """The certificates (DER) the server sent, leaf first."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        # Python 3.10-3.12 have it on the C object only; its items are _ssl.Certificate objects.
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain: list[bytes] = []
    if getter is not None:
        try:
            for cert in getter() or ():
                chain.append(cert if isinstance(cert, bytes) else cert.public_bytes(ENCODING_DER))
        except (ValueError, ssl.SSLError, AttributeError):
            chain = []
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain = [leaf]
    return chain


def cert_info(ssl_object, *, verified: bool) -> CertInfo | None:
    """What the presented chain says, or None when there is no certificate to read."""
    parsed = _parse_chain(tuple(presented_chain(ssl_object)))
    if parsed is None:
        return None
    not_after, leaf_not_after, subject, issuer = parsed
    return CertInfo(not_after=not_after, leaf_not_after=leaf_not_after, subject=subject, issuer=issuer,
                    verified=verified)


# A server presents the same chain probe after probe: it is parsed once (a tenth of an HTTPS
# probe's CPU time otherwise).
@functools.lru_cache(maxsize=256)
def _parse_chain(chain: tuple[bytes, ...]) -> tuple[datetime, datetime, str, str] | None:
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID, NameOID

    certs = []
    for der in chain:
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    if not certs:
        return None
    leaf = certs[0]

    def name_of(name: x509.Name) -> str:
        common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(common[0].value) if common else name.rfc4514_string()

    subject = name_of(leaf.subject)
    if not leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        try:
            sans = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            names = sans.get_values_for_type(x509.DNSName) or [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
            subject = names[0] if names else subject
        except x509.ExtensionNotFound:
            pass
    return (min(c.not_valid_after_utc for c in certs), leaf.not_valid_after_utc, subject or "(no subject)",
            name_of(leaf.issuer))


def expiry_problem(cert: CertInfo, min_cert_days: int | None, now: datetime | None = None) -> str | None:
    """Why the chain ends too soon for `min_cert_days`, or None."""
    if min_cert_days is None:
        return None
    days = cert.days_left(now or utcnow())
    if days >= min_cert_days:
        return None
    which = f"certificate {cert.subject!r}" if cert.not_after == cert.leaf_not_after else (
        f"a certificate in the chain of {cert.subject!r}")
    when = f"expired {-days:.1f} days ago" if days < 0 else f"expires in {days:.1f} days"
    return f"{which} {when} ({rfc3339(cert.not_after)}), fewer than min_cert_days {min_cert_days}"


def tls_problem(exc: BaseException) -> str | None:
    """A short account of a TLS failure found in `exc` or its causes: the verification error
    (expired, wrong host, unknown issuer) when there is one."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        # aiohttp's own errors subclass ssl's and carry the original in certificate_error / os_error
        for candidate in (getattr(current, "certificate_error", None), getattr(current, "os_error", None), current):
            if isinstance(candidate, ssl.SSLCertVerificationError) and getattr(candidate, "verify_message", None):
                return f"certificate verify failed: {candidate.verify_message}"
            if isinstance(candidate, ssl.SSLError) and getattr(candidate, "reason", None):
                return f"TLS handshake failed: {candidate.reason}"
        current = current.__cause__ or current.__context__
        seen += 1
    return None


__all__ = ["HANDSHAKE_STARTS", "CaFileError", "TimedContext", "cert_info", "client_context", "expiry_problem",
           "presented_chain", "tls_problem"]
