"""Signed checkpoints of the log: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519.

Body (C2SP tlog-checkpoint, "Note text"), four lines each ending in a newline:

    <origin>                       the log's name, e.g. "uptime.example.com/log"
    <tree size>                    decimal, no leading zeros
    <root hash>                    standard base64 of the 32-byte RFC 6962 tree head
    time <RFC 3339 UTC>            extension line: the collector's clock when it signed

Signed note (C2SP signed-note, "Format"): the body, a blank line, then one line per signature:
"— " (U+2014, space), the key name, a space, base64(4-byte key ID || 64-byte Ed25519 signature
of the body). Key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4] (evidence.keys.key_id).

Verifier key text (as golang.org/x/mod/sumdb/note writes it): "<name>+<8 hex key ID>+<base64
of 0x01 || 32-byte public key>".
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import keys as _keys
from .canonical import canonical_time

__all__ = ["NoteError", "NoteKey", "Checkpoint", "format_vkey", "parse_vkey", "note_key", "sign_note",
           "open_note", "checkpoint_body", "parse_checkpoint_body", "sign_checkpoint", "verify_checkpoint"]

DASH = "\u2014"
MAX_SIGNATURES = 100  # a note with more is refused (golang.org/x/mod/sumdb/note does the same)
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")
_TIME = re.compile(r"^time (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z)$")


class NoteError(ValueError):
    """A note or checkpoint that does not hold; the message says what and where."""


@dataclass(frozen=True)
class NoteKey:
    """A named Ed25519 key a note may be signed with."""
    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return _keys.key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, self.public_key)


def _valid_name(name: str) -> bool:
    return bool(name) and not any(ch.isspace() for ch in name) and "+" not in name


def format_vkey(name: str, key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    raw = _keys.public_key_bytes(key)
    encoded = base64.b64encode(_keys.SIGNATURE_TYPE_ED25519 + raw).decode("ascii")
    return f"{name}+{_keys.key_id(name, raw)}+{encoded}"


def parse_vkey(text: str) -> NoteKey:
    """A NoteKey from "<name>+<8 hex>+<base64(0x01 || key)>"; NoteError naming the fault."""
    if not isinstance(text, str):
        raise NoteError("log key: expected text <name>+<key id>+<base64 key>")
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"log key {text[:60]!r}: expected <name>+<8 hex digit key id>+<base64 key>")
    name, hex_id, b64 = parts
    if not _valid_name(name):
        raise NoteError(f"log key: name {name!r} is empty or holds a space or '+'")
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise NoteError(f"log key: key id {hex_id!r} is not 8 lowercase hex digits")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("log key: the key is not standard base64") from None
    if len(raw) != 33 or raw[0] != 1:
        raise NoteError("log key: expected an Ed25519 key (type byte 0x01 and 32 bytes)")
    key = NoteKey(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
    if key.key_id != hex_id:
        raise NoteError(f"log key: key id {hex_id} does not match the name and key (they give {key.key_id})")
    return key


def note_key(name: str, key: Ed25519PublicKey | Ed25519PrivateKey) -> NoteKey:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not _valid_name(name):
        raise NoteError(f"key name {name!r} is empty or holds a space or '+'")
    return NoteKey(name, key)


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """The signed note of `text` (which ends in a newline), signed as `name`."""
    if not text.endswith("\n"):
        raise NoteError("a note's text ends in a newline")
    _check_characters(text)
    if not _valid_name(name):
        raise NoteError(f"key name {name!r} is empty or holds a space or '+'")
    sig = bytes.fromhex(_keys.key_id(name, key)) + _keys.sign(key, text.encode("utf-8"))
    return f"{text}\n{DASH} {name} {base64.b64encode(sig).decode('ascii')}\n"


def _check_characters(text: str) -> None:
    for i, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise NoteError(f"the note holds a control character (U+{ord(ch):04X}) at character {i}")


def open_note(note: str | bytes, keys: list[NoteKey]) -> tuple[str, list[str]]:
    """(text, names of the known keys whose signatures verified) of a signed note.

    C2SP signed-note rules: valid UTF-8 without control characters other than newline; the text
    ends at the last blank line; each signature line is "— <name> <base64>". A signature by an
    unknown key (name and key ID not both known) is ignored; one by a known key that fails
    rejects the note; so does a note no known key signed.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError(f"the note is not valid UTF-8 (at byte {exc.start})") from None
    _check_characters(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line between its text and its signatures")
    text, block = note[:split + 1], note[split + 2:]
    if not block or not block.endswith("\n"):
        raise NoteError("the note has no signature lines after its blank line (or they do not end in a newline)")
    known = {(k.name, k.key_id): k for k in keys}
    verified: list[str] = []
    seen: set[tuple[str, str]] = set()
    others: list[str] = []
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has {len(lines)} signature lines; at most {MAX_SIGNATURES} are read")
    for number, line in enumerate(lines, 1):
        if not line.startswith(DASH + " "):
            raise NoteError(f"signature line {number} does not start with an em dash and a space: {line[:40]!r}")
        name, _, b64 = line[2:].partition(" ")
        if not _valid_name(name):
            raise NoteError(f"signature line {number}: key name {name!r} is empty or holds a space or '+'")
        try:
            sig = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError(f"signature line {number} ({name}): the signature is not standard base64") from None
        if len(sig) < 5:
            raise NoteError(f"signature line {number} ({name}): the signature is too short")
        kid = sig[:4].hex()
        key = known.get((name, kid))
        if key is None:
            others.append(f"{name}+{kid}")
            continue
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        if not _keys.verify(key.public_key, text.encode("utf-8"), sig[4:]):
            raise NoteError(f"the signature by {name}+{kid} does not verify: the note's text was changed "
                            "or signed with another key")
        verified.append(name)
    if not verified:
        wanted = ", ".join(f"{k.name}+{k.key_id}" for k in keys) or "(no key given)"
        found = ", ".join(others) or "none"
        raise NoteError(f"the note is not signed by the expected key {wanted} (signed by: {found})")
    return text, verified


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: datetime | None = None

    def body(self) -> str:
        return checkpoint_body(self)


def checkpoint_body(cp: Checkpoint) -> str:
    if not cp.origin or "\n" in cp.origin:
        raise NoteError("a checkpoint's origin is one non-empty line")
    if len(cp.root) != 32:
        raise NoteError("a checkpoint's root hash is 32 bytes")
    if cp.size < 0:
        raise NoteError("a checkpoint's tree size is not negative")
    lines = [cp.origin, str(cp.size), base64.b64encode(cp.root).decode("ascii")]
    if cp.time is not None:
        lines.append("time " + canonical_time(cp.time))
    return "\n".join(lines) + "\n"


def parse_checkpoint_body(text: str) -> Checkpoint:
    """The checkpoint of a note text; NoteError naming the line at fault."""
    if not text.endswith("\n"):
        raise NoteError("checkpoint: the text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError(f"checkpoint: expected origin, tree size and root hash lines, got {len(lines)} line(s)")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise NoteError("checkpoint line 1 (origin): empty")
    if not _DECIMAL.match(size_text):
        raise NoteError(f"checkpoint line 2 (tree size): {size_text[:30]!r} is not a decimal number without "
                        "leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"checkpoint line 3 (root hash): {root_text[:60]!r} is not standard base64") from None
    if len(root) != 32:
        raise NoteError(f"checkpoint line 3 (root hash): {len(root)} bytes, a SHA-256 hash is 32")
    moment = None
    for number, line in enumerate(extensions, 4):
        m = _TIME.match(line)
        if not line:
            raise NoteError(f"checkpoint line {number}: an extension line is not empty")
        if m is None:
            raise NoteError(f"checkpoint line {number}: unknown extension line {line[:40]!r} (expected "
                            "'time <RFC 3339 UTC>')")
        if moment is not None:
            raise NoteError(f"checkpoint line {number}: a second time line")
        from protocol.timestamps import parse_rfc3339
        try:
            moment = parse_rfc3339(m.group(1))
        except ValueError:
            raise NoteError(f"checkpoint line {number}: {m.group(1)!r} is not a valid time") from None
    return Checkpoint(origin, int(size_text), root, moment)


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey, name: str | None = None) -> str:
    """The signed note of a checkpoint; the key name is the origin unless given."""
    return sign_note(checkpoint_body(cp), name or cp.origin, key)


def verify_checkpoint(note: str | bytes, key: NoteKey) -> Checkpoint:
    """The checkpoint of a note signed by `key`, whose origin is the key's name."""
    text, _ = open_note(note, [key])
    cp = parse_checkpoint_body(text)
    if cp.origin != key.name:
        raise NoteError(f"checkpoint origin {cp.origin!r} is not the log key's name {key.name!r}")
    return cp
