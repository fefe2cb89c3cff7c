"""Ed25519 keys: made, kept in a file only its owner can read, shown as text.

* Private key file: PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), mode 0600, written whole or not
  at all (a temporary file renamed into place). A file that its group or others may read or
  write is refused: a key others could read signs for whoever read it.
* Public key text: "ed25519:" followed by the standard base64 (RFC 4648 §4, padded) of the
  32-byte RFC 8032 public key, e.g. "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".
* Key id: the C2SP signed-note key ID, SHA-256(name || 0x0A || 0x01 || 32-byte key)[:4], as 8
  lowercase hex digits; `name` is the agent's id for an agent key and the log's origin for the
  collector's checkpoint key. It picks the key among an agent's keys (rotation); it is an
  identifier, not a fingerprint that proves anything.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "BadKey", "PUBLIC_KEY_PREFIX", "generate_private_key", "save_private_key", "load_private_key",
    "load_or_create_private_key", "public_key_text", "parse_public_key", "public_key_bytes", "key_id",
    "sign", "verify",
]

PUBLIC_KEY_PREFIX = "ed25519:"
SIGNATURE_TYPE_ED25519 = b"\x01"  # C2SP signed-note, "Signature types"


class BadKey(ValueError):
    """A key file or key text that cannot be used; the message names the file or the text."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save_private_key(key: Ed25519PrivateKey, path: str | Path, *, overwrite: bool = False) -> None:
    """Write the key to `path` with mode 0600, atomically: a temporary file in the same folder,
    flushed to disk, then renamed into place (never a half-written key file)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BadKey(f"{path}: a key file is already there; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, _pem(key))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process made the file meanwhile
            tmp.unlink()
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise BadKey(f"{path}: a key file is already there; refusing to replace it") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The key in `path`; BadKey when it is missing, not a regular file, readable or writable by
    group or others, or not an unencrypted Ed25519 PKCS#8 PEM key."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadKey(f"{path}: no such key file") from None
    except OSError as exc:
        raise BadKey(f"{path}: cannot read the key file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadKey(f"{path}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise BadKey(f"{path}: the private key file may be read or written by its group or others "
                        f"(mode {mode:04o}); make it the owner's alone with `chmod 600 {path}`")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadKey(f"{path}: cannot read the key file: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BadKey(f"{path}: the key is encrypted; give an unencrypted PKCS#8 key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BadKey(f"{path}: not a PEM private key (expected -----BEGIN PRIVATE KEY----- with an "
                        "Ed25519 key)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadKey(f"{path}: holds a {type(key).__name__.removeprefix('_')} key, not an Ed25519 key")
    return key


def load_or_create_private_key(path: str | Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in `path`, made there first when there is none: (key, whether it was made now)."""
    path = Path(path)
    if not path.exists():
        key = generate_private_key()
        try:
            save_private_key(key, path)
            return key, True
        except BadKey:
            pass  # another process made it meanwhile: use that one
    return load_private_key(path), False


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """"ed25519:<base64 of the 32-byte public key>"."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(public_key_bytes(key)).decode("ascii")


def parse_public_key(text: object, what: str = "public key") -> Ed25519PublicKey:
    """The key of "ed25519:<base64>"; BadKey naming `what` and the fault."""
    if not isinstance(text, str):
        raise BadKey(f"{what}: expected text \"ed25519:<base64>\", got {type(text).__name__}")
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise BadKey(f"{what}: {text[:40]!r} does not start with {PUBLIC_KEY_PREFIX!r}")
    body = text[len(PUBLIC_KEY_PREFIX):]
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadKey(f"{what}: {body[:48]!r} is not standard base64") from None
    if len(raw) != 32:
        raise BadKey(f"{what}: an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    if base64.b64encode(raw).decode("ascii") != body:
        raise BadKey(f"{what}: not in canonical base64 form")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(name: str, key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """C2SP signed-note key ID: SHA-256(name || 0x0A || 0x01 || key)[:4], in hex."""
    raw = key if isinstance(key, bytes) else public_key_bytes(key)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + SIGNATURE_TYPE_ED25519 + raw).digest()[:4].hex()


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
