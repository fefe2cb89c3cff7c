"""What is signed and how: agents' key files (evidence.keys), the canonical bytes of results,
batch statements and log entries (evidence.canonical), and signed checkpoints (evidence.checkpoint).

The signed-note vector is the one of golang.org/x/mod/sumdb/note (note.go, the package example):
the key "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", its private seed
"AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz" (type byte 0x01, then the seed) and the signed note.
Ed25519 is deterministic (RFC 8032), so signing the same text must give the same note byte for byte.
"""
from __future__ import annotations

import base64
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence import canonical, checkpoint, keys

UTC = timezone.utc
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


# -- keys -------------------------------------------------------------------------------------------

def test_a_private_key_is_saved_with_mode_0600_and_loads_back(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        key, created = keys.load_or_create_private_key(tmp_path / "spool" / "agent.key")
    finally:
        os.umask(old)
    path = tmp_path / "spool" / "agent.key"
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = keys.load_or_create_private_key(path)
    assert not created_again and keys.public_key_text(again) == keys.public_key_text(key)
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == ["agent.key"]  # no temporary file left behind


def test_a_key_file_others_can_read_is_refused_naming_the_mode_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    keys.save_private_key(keys.generate_private_key(), path)
    path.chmod(0o644)
    with pytest.raises(keys.BadKey, match=r"agent.key: the private key file may be read or written by its group or "
                                          r"others \(mode 0644\); make it the owner's alone with `chmod 600 "):
        keys.load_private_key(path)
    path.chmod(0o620)
    with pytest.raises(keys.BadKey, match=r"mode 0620"):
        keys.load_private_key(path)


def test_an_existing_key_file_is_never_replaced_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    first = keys.generate_private_key()
    keys.save_private_key(first, path)
    with pytest.raises(keys.BadKey, match="already there"):
        keys.save_private_key(keys.generate_private_key(), path)
    assert keys.public_key_text(keys.load_private_key(path)) == keys.public_key_text(first)
    second = keys.generate_private_key()
    keys.save_private_key(second, path, overwrite=True)
    assert keys.public_key_text(keys.load_private_key(path)) == keys.public_key_text(second)


@pytest.mark.parametrize(("content", "message"), [
    (b"not a key", "not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
])
def test_a_key_file_that_is_no_ed25519_key_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "agent.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(keys.BadKey, match=message):
        keys.load_private_key(path)


def test_public_key_text_round_trips_and_bad_text_is_named() -> None:
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    text = keys.public_key_text(key)
    assert text == "ed25519:" + base64.b64encode(base64.b64decode(GO_VKEY.split("+")[2])[1:]).decode()
    assert keys.public_key_text(keys.parse_public_key(text)) == text
    for bad, message in [("ssh-ed25519 AAAA", "does not start with 'ed25519:'"), ("ed25519:!!!", "not standard base64"),
                         ("ed25519:AAAA", "32 bytes, this one is 3"), (5, "expected text")]:
        with pytest.raises(keys.BadKey, match=message):
            keys.parse_public_key(bad)


def test_key_id_is_the_signed_note_key_id() -> None:
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    assert keys.key_id("PeterNeumann", key) == "c74f20a3"


# -- canonical bytes --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_equals_rfc8785_byte_for_byte(value) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(canonical.CanonicalError):
            canonical.canonical_json(value)
        return
    assert canonical.canonical_json(value) == expected


@pytest.mark.parametrize("number", [1e-7, 1e-6, 5e-324, 1e21, 1e16, 123456789012345680.0, 0.1, -0.0, 12.0, 3.6e6, 1e-05])
def test_numbers_are_printed_as_ecmascript_does(number: float) -> None:
    assert canonical.canonical_json(number) == rfc8785.dumps(number)


WIRE = {"id": " 0f1c9a0e6c2b4d0a9b3f5e7d1c2b3a4f ", "check": "web", "slot": "2026-11-25T03:40:00+01:00",
        "started": "2026-11-25T02:40:00.013Z", "ok": False, "latency_ms": 12.5, "status_code": 503,
        "error": "status", "detail": "status 503 not in [200]"}


def test_a_result_hashes_alike_from_the_wire_and_from_what_the_collector_stored() -> None:
    """The agent hashes what it sends as the collector will validate it; the collector rebuilds the
    object from its row (store names, datetimes): both give the same canonical bytes."""
    from_wire = canonical.result_object_from_wire(WIRE)
    stored = {"result_id": "0f1c9a0e6c2b4d0a9b3f5e7d1c2b3a4f", "check": "web",
              "slot": datetime(2026, 11, 25, 2, 40, tzinfo=UTC),
              "started": datetime(2026, 11, 25, 2, 40, 0, 13000, tzinfo=UTC), "ok": False, "latency_ms": 12.5,
              "status_code": 503, "error": "status", "detail": "status 503 not in [200]"}
    assert canonical.result_object(stored) == from_wire
    assert canonical.canonical_result(from_wire) == (
        b'{"check":"web","detail":"status 503 not in [200]","error":"status","id":"0f1c9a0e6c2b4d0a9b3f5e7d1c2b3a4f",'
        b'"latency_ms":12.5,"ok":false,"slot":"2026-11-25T02:40:00Z","started":"2026-11-25T02:40:00.013Z",'
        b'"status_code":503}')
    assert canonical.result_digest(from_wire) == canonical.result_digest(canonical.result_object(stored))


def test_canonical_time_keeps_microseconds_without_trailing_zeros() -> None:
    base = datetime(2026, 11, 25, 2, 40, tzinfo=UTC)
    assert canonical.canonical_time(base) == "2026-11-25T02:40:00Z"
    assert canonical.canonical_time(base + timedelta(microseconds=130000)) == "2026-11-25T02:40:00.13Z"
    assert canonical.canonical_time(base + timedelta(microseconds=1)) == "2026-11-25T02:40:00.000001Z"
    with pytest.raises(canonical.CanonicalError, match="naive"):
        canonical.canonical_time(datetime(2026, 11, 25))


def test_a_result_object_with_a_field_too_many_or_too_few_is_refused() -> None:
    obj = canonical.result_object_from_wire(WIRE)
    with pytest.raises(canonical.CanonicalError, match="unknown extra"):
        canonical.canonical_result({**obj, "extra": 1})
    with pytest.raises(canonical.CanonicalError, match="missing ok"):
        canonical.canonical_result({k: v for k, v in obj.items() if k != "ok"})


def test_the_batch_statement_and_its_hash_are_fixed_bytes() -> None:
    obj = canonical.result_object_from_wire(WIRE)
    digest = canonical.result_digest(obj)
    statement = canonical.statement_for_results("eu-west", None, [obj])
    assert statement == (b'{"agent":"eu-west","count":1,"prev":null,"results_sha256":"'
                         + canonical.results_sha256([digest]).encode() + b'","type":"uptime-verifier/batch/v1"}')
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    signed = canonical.sign_batch(key, "eu-west", "ab" * 32, [obj])
    assert signed.batch_hash == canonical.batch_hash(signed.statement)
    assert canonical.verify_batch_signature(key.public_key(), signed.statement, signed.signature)
    other = canonical.statement_for_results("us-east", "ab" * 32, [obj])
    assert not canonical.verify_batch_signature(key.public_key(), other, signed.signature)
    assert canonical.parse_signature_header(signed.header()) == (signed.key_id, "ab" * 32, signed.signature)


@pytest.mark.parametrize("header", ["", "key=1234, prev=none", "key=XYZ12345, prev=none, sig=" + "A" * 86 + "==",
                                    "key=12345678, prev=abc, sig=" + "A" * 86 + "=="])
def test_a_malformed_signature_header_is_refused_naming_the_header(header: str) -> None:
    with pytest.raises(canonical.CanonicalError, match="header Uptime-Batch-Signature: expected"):
        canonical.parse_signature_header(header)


def test_log_entries_are_canonical_json_of_their_fields() -> None:
    at = datetime(2026, 11, 25, 2, 40, 2, tzinfo=UTC)
    entry = canonical.batch_entry("eu-west", "cd" * 32, "c74f20a3", "sig", at)
    assert entry == (b'{"agent":"eu-west","batch_sha256":"' + b"cd" * 32 + b'","key_id":"c74f20a3",'
                     b'"received_at":"2026-11-25T02:40:02Z","signature":"sig","type":"batch"}')
    record = canonical.maintenance_record({"id": 7, "policy": "p", "kind": "planned", "start": at, "end": at,
                                           "recorded_at": at, "recorded_by": "api"})
    assert record["note"] == "" and record["cancelled_at"] is None
    assert canonical.maintenance_entry(record).startswith(b'{"record":{"author":"","cancel_reason":null,')
    with pytest.raises(canonical.CanonicalError, match="give both or neither"):
        canonical.batch_entry("eu-west", "cd" * 32, "c74f20a3", None, at)


# -- checkpoints ------------------------------------------------------------------------------------

def test_signed_notes_match_the_go_implementation() -> None:
    key = Ed25519PrivateKey.from_private_bytes(GO_SEED)
    assert checkpoint.format_vkey("PeterNeumann", key) == GO_VKEY
    assert checkpoint.sign_note(GO_TEXT, "PeterNeumann", key) == GO_NOTE
    text, names = checkpoint.open_note(GO_NOTE, [checkpoint.parse_vkey(GO_VKEY)])
    assert text == GO_TEXT and names == ["PeterNeumann"]


@pytest.mark.parametrize(("note", "message"), [
    (GO_NOTE.replace("cryptography", "cryptographY"), "does not verify"),
    (GO_TEXT, "no blank line"),
    (GO_NOTE.replace("\u2014 ", "- "), "does not start with an em dash"),
    (GO_NOTE.replace("then", "\tthen"), r"control character \(U\+0009\)"),
    (GO_NOTE.replace("PeterNeumann x08", "EnochRoot x08"), "not signed by the expected key PeterNeumann\\+c74f20a3 "
                                                          "\\(signed by: EnochRoot\\+c74f20a3\\)"),
])
def test_a_bad_note_is_refused_naming_what_is_wrong(note: str, message: str) -> None:
    with pytest.raises(checkpoint.NoteError, match=message):
        checkpoint.open_note(note, [checkpoint.parse_vkey(GO_VKEY)])


def test_a_signature_by_an_unknown_key_is_ignored_beside_a_known_one() -> None:
    other = keys.generate_private_key()
    cosigned = GO_NOTE + checkpoint.sign_note(GO_TEXT, "witness.example", other).split("\n\n")[1]
    assert checkpoint.open_note(cosigned, [checkpoint.parse_vkey(GO_VKEY)])[1] == ["PeterNeumann"]


def test_a_checkpoint_round_trips_and_a_bad_body_is_named_by_line() -> None:
    key = keys.generate_private_key()
    cp = checkpoint.Checkpoint("uptime.example.com/log", 20852163, bytes(range(32)),
                               datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    note = checkpoint.sign_checkpoint(cp, key)
    assert note.startswith("uptime.example.com/log\n20852163\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
                           "time 2026-12-01T00:05:00Z\n\n\u2014 uptime.example.com/log ")
    vkey = checkpoint.parse_vkey(checkpoint.format_vkey("uptime.example.com/log", key))
    assert checkpoint.verify_checkpoint(note, vkey) == cp
    for body, message in [
        ("log\n012\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "line 2 \\(tree size\\)"),
        ("log\n12\nAAEC\n", "line 3 \\(root hash\\): 3 bytes"),
        ("log\n12\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nfoo bar\n", "line 4: unknown extension"),
        ("log\n12\n", "expected origin, tree size and root hash"),
    ]:
        with pytest.raises(checkpoint.NoteError, match=message):
            checkpoint.parse_checkpoint_body(body)
    wrong_origin = checkpoint.sign_checkpoint(checkpoint.Checkpoint("other/log", 1, bytes(32)), key,
                                              name="uptime.example.com/log")
    with pytest.raises(checkpoint.NoteError, match="origin 'other/log' is not the log key's name"):
        checkpoint.verify_checkpoint(wrong_origin, vkey)


@pytest.mark.parametrize(("vkey", "message"), [
    ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match the name and key"),
    ("PeterNeumann+c74f20a3", "expected <name>"),
    ("PeterNeumann+c74f20a3+AhpcAA==", "expected an Ed25519 key"),
])
def test_a_bad_verifier_key_is_named(vkey: str, message: str) -> None:
    with pytest.raises(checkpoint.NoteError, match=message):
        checkpoint.parse_vkey(vkey)


result_objects = st.fixed_dictionaries({
    "check": st.text(min_size=1), "detail": st.none() | st.text(), "error": st.none() | st.text(),
    "id": st.text(min_size=1), "latency_ms": st.none() | st.floats(0, 3.6e6) | st.integers(0, 3_600_000),
    "ok": st.booleans(), "slot": st.text(), "started": st.text(),
    "status_code": st.none() | st.integers(-(2 ** 53) + 1, 2 ** 53 - 1),
})


@settings(max_examples=300, deadline=None)
@given(result_objects, st.text(min_size=1), st.none() | st.text("0123456789abcdef", min_size=64, max_size=64))
def test_the_fast_encoders_of_results_statements_and_entries_equal_rfc8785(result, agent, prev) -> None:
    try:
        expected = rfc8785.dumps(result)
    except rfc8785.CanonicalizationError:
        with pytest.raises(canonical.CanonicalError):
            canonical.canonical_result(result)
        return
    assert canonical.canonical_result(result) == expected
    digest = canonical.results_sha256([canonical.result_digest(result)])
    try:
        statement = rfc8785.dumps({"agent": agent, "count": 1, "prev": prev, "results_sha256": digest,
                                   "type": canonical.BATCH_TYPE})
    except rfc8785.CanonicalizationError:
        return
    assert canonical.batch_statement(agent, prev, 1, digest) == statement
    at = datetime(2026, 11, 25, 2, 40, 2, 500, tzinfo=UTC)
    assert canonical.batch_entry(agent, digest, "c74f20a3", agent, at) == rfc8785.dumps(
        {"agent": agent, "batch_sha256": digest, "key_id": "c74f20a3", "received_at": "2026-11-25T02:40:02.0005Z",
         "signature": agent, "type": "batch"})


def test_a_result_with_details_hashes_alike_from_the_wire_and_from_the_store() -> None:
    """`degraded` and the optional details are signed too: the collector keeps them apart
    (Result.degraded, Result.extra) and must rebuild the very object the agent hashed."""
    from collector import ingest
    from protocol.wire import ResultIn
    if not hasattr(ingest, "details"):
        pytest.skip("this collector keeps no result details")
    wire = dict(WIRE, ok=True, error=None, status_code=200, degraded=True, phases={"connect": 0.012, "tls": -0.0},
                cert_not_after="2027-01-01T00:00:00+01:00", steps=[{"name": "login", "ok": True, "latency_ms": 0.0}],
                scheduled="2026-11-25T02:39:59.999Z")
    obj = canonical.result_object_from_wire(wire)
    assert obj["degraded"] is True and obj["cert_not_after"] == "2026-12-31T23:00:00Z"
    assert obj["steps"] == [{"detail": None, "error": None, "latency_ms": 0, "name": "login", "ok": True,
                             "status_code": None}]
    r = ResultIn.model_validate(wire)
    stored = {"result_id": r.id, "check": r.check, "slot": r.slot, "started": r.started, "ok": r.ok,
              "latency_ms": r.latency_ms, "status_code": r.status_code, "error": r.error, "detail": r.detail,
              "degraded": bool(r.degraded), "extra": ingest.details(r)}
    assert canonical.canonical_result(canonical.result_object(stored)) == canonical.canonical_result(obj)
    assert canonical.canonical_result(obj) == rfc8785.dumps(obj)
    plain = canonical.result_object_from_wire(dict(WIRE, degraded=False))
    assert "degraded" not in plain and canonical.result_digest(plain) == canonical.result_digest(
        canonical.result_object_from_wire(WIRE))
