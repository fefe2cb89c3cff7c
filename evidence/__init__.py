"""Signed evidence: what agents sign (canonical), the collector's tamper-evident log (merkle,
checkpoint), evidence bundles (bundle, build) and the offline verifier (verify, `uptime-verify`).

Pure: no database, no network. It uses only the shared wire definitions (protocol) and the pure
rules core (collector.rules), so a customer can verify a bundle with nothing but this package.
Formats: docs/evidence.md.
"""
