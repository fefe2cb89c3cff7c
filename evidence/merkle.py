"""RFC 6962 Merkle trees: the hashing, tree heads, inclusion and consistency proofs of an
append-only log, with nothing but hashlib.

Hashing (RFC 6962 §2.1, RFC 9162 §2.1.1): a leaf's hash is SHA-256(0x00 || data), an inner node's
SHA-256(0x01 || left || right); the tree over n > 1 leaves splits at k, the largest power of two
below n, into the first k leaves and the rest. The empty tree's hash is SHA-256("").

Proof generation reads leaf hashes through `leaves`: a sequence of leaf hashes, or a callable
`leaves(start, end)` returning the leaf hashes of [start, end) (so that a log kept in a database
can be read a range at a time). `cache`, optional, keeps the hashes of complete subtrees (a
power-of-two number of leaves): they never change as the log grows, so a long-lived cache makes
proofs cheap.

`proof_nodes` and `root_from_nodes` carry the inclusion proofs of many entries at once: the union
of their proof hashes, each keyed by the range of leaves [start, end) it covers. Each entry's own
RFC 9162 inclusion proof can be read from it (`inclusion_proof_from_nodes`); verifying them all
together costs one pass over the tree instead of one path per entry, and a node whose given hash
differs from the one recomputed below it says which entries are at fault.
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left
from typing import Callable, Iterable, MutableMapping, Sequence, Union

__all__ = [
    "HASH_SIZE", "EMPTY_ROOT", "ProofError", "leaf_hash", "node_hash", "split_point", "root",
    "subtree_hash", "inclusion_proof", "verify_inclusion", "root_from_inclusion_proof",
    "consistency_proof", "verify_consistency", "proof_nodes", "root_from_nodes", "NodeMismatch",
    "inclusion_proof_from_nodes", "path_ranges",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256

Leaves = Union[Sequence[bytes], Callable[[int, int], Sequence[bytes]]]
Cache = MutableMapping[tuple[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not hold, or arguments no proof can have; the message says which."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1: MTH({d}) = SHA-256(0x00 || d)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The tree head over the given leaf hashes (EMPTY_ROOT for none).

    Level by level, the last node of an odd level carried up unchanged: the same tree as the
    recursive split at the largest power of two (tested against it and RFC 6962's vectors).
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        level = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if odd is not None:
            level.append(odd)
    return level[0]


def _reader(leaves: Leaves) -> Callable[[int, int], Sequence[bytes]]:
    if callable(leaves):
        return leaves
    return lambda start, end: leaves[start:end]


def subtree_hash(leaves: Leaves, start: int, end: int, cache: Cache | None = None) -> bytes:
    """MTH(D[start:end]) of the log's leaves."""
    if cache is not None:
        hit = cache.get((start, end))
        if hit is not None:
            return hit
    read = _reader(leaves)
    size = end - start
    if cache is not None and size > 1 and size & (size - 1):
        # not a complete subtree: made of complete ones, which the cache can keep
        k = split_point(size)
        value = node_hash(subtree_hash(read, start, start + k, cache), subtree_hash(read, start + k, end, cache))
    else:
        hashes = read(start, end)
        if len(hashes) != size:
            raise ProofError(f"the log returned {len(hashes)} leaf hashes for entries [{start}, {end})")
        value = root(hashes)
    if cache is not None and size & (size - 1) == 0:
        cache[(start, end)] = value
    return value


def path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up the inclusion proof of `index` in a tree of `size`
    (RFC 6962 §2.1.1 PATH), from the leaf's sibling up to the root's other half."""
    if not 0 <= index < size:
        raise ProofError(f"entry {index} is not in a tree of size {size}")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start = start + k
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, leaves: Leaves, cache: Cache | None = None) -> list[bytes]:
    """RFC 6962 §2.1.1 / RFC 9162 §2.1.3.1: the audit path of entry `index` in the tree of the
    first `size` leaves."""
    read = _reader(leaves)
    return [subtree_hash(read, start, end, cache) for start, end in path_ranges(index, size)]


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root the audit path leads to (ProofError when it cannot be one)."""
    if not 0 <= index < size:
        raise ProofError(f"entry {index} is not in a tree of size {size}")
    _check_hashes([leaf], "leaf hash")
    _check_hashes(proof, "proof hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"the inclusion proof of entry {index} in a tree of size {size} is too long "
                             f"({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the inclusion proof of entry {index} in a tree of size {size} is too short "
                         f"({len(proof)} hashes)")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """ProofError unless the audit path leads from `leaf` at `index` to `expected_root`."""
    got = root_from_inclusion_proof(index, size, leaf, proof)
    if got != expected_root:
        raise ProofError(f"the inclusion proof of entry {index} leads to root {got.hex()}, "
                         f"not to the tree head {expected_root.hex()} of size {size}")


def consistency_proof(first: int, second: int, leaves: Leaves, cache: Cache | None = None) -> list[bytes]:
    """RFC 6962 §2.1.2 / RFC 9162 §2.1.4.1: PROOF(first, D[second]) (empty when first is 0 or equal
    to second)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from tree size {first} to {second}")
    if first == 0 or first == second:
        return []
    read = _reader(leaves)
    out: list[bytes] = []

    def subproof(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                out.append(subtree_hash(read, start, end, cache))
            return
        k = split_point(n)
        if m <= k:
            subproof(m, start, start + k, whole)
            out.append(subtree_hash(read, start + k, end, cache))
        else:
            subproof(m - k, start + k, end, False)
            out.append(subtree_hash(read, start, start + k, cache))

    subproof(first, 0, second, True)
    return out


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: ProofError unless the tree of size `second` with head `second_root`
    extends the tree of size `first` with head `first_root`."""
    if first < 0 or second < first:
        raise ProofError(f"tree size {second} is smaller than the earlier size {first}: a log only grows")
    _check_hashes(proof, "proof hash")
    if first == second:
        if proof:
            raise ProofError(f"a consistency proof between equal sizes ({first}) must be empty")
        if first_root != second_root:
            raise ProofError(f"two tree heads of the same size {first} differ: {first_root.hex()} and "
                             f"{second_root.hex()}")
        return
    if first == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError(f"the consistency proof from tree size {first} to {second} is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"the consistency proof from tree size {first} to {second} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the consistency proof from tree size {first} to {second} is too short")
    if fr != first_root:
        raise ProofError(f"the log of size {second} does not extend the earlier tree of size {first}: "
                         f"its first {first} entries hash to {fr.hex()}, not {first_root.hex()}")
    if sr != second_root:
        raise ProofError(f"the consistency proof leads to root {sr.hex()}, not to the tree head "
                         f"{second_root.hex()} of size {second}")


def _check_hashes(hashes: Iterable[bytes], what: str) -> None:
    for h in hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError(f"a {what} is not {HASH_SIZE} bytes")


# -- many entries at once ------------------------------------------------------------------------

def proof_nodes(indices: Iterable[int], size: int, leaves: Leaves, cache: Cache | None = None
                ) -> dict[tuple[int, int], bytes]:
    """Every hash of the inclusion proofs of `indices` in the tree of `size`, keyed by the leaf
    range [start, end) each covers (the union of their `path_ranges`)."""
    wanted = sorted(set(indices))
    if wanted and not (0 <= wanted[0] and wanted[-1] < size):
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise ProofError(f"entry {bad} is not in a tree of size {size}")
    read = _reader(leaves)
    nodes: dict[tuple[int, int], bytes] = {}

    def walk(start: int, end: int, a: int, b: int) -> bytes:
        """The hash of [start, end), whose wanted entries are wanted[a:b] (a < b)."""
        if end - start == 1:
            return subtree_hash(read, start, end, cache)
        mid = start + split_point(end - start)
        m = bisect_left(wanted, mid, a, b)
        left = walk(start, mid, a, m) if m > a else None
        right = walk(mid, end, m, b) if b > m else None
        if left is None:
            left = nodes[(start, mid)] = subtree_hash(read, start, mid, cache)
        elif right is not None:
            nodes[(start, mid)] = left
        if right is None:
            right = nodes[(mid, end)] = subtree_hash(read, mid, end, cache)
        elif left is not None:
            nodes[(mid, end)] = right
        return node_hash(left, right)

    if wanted:
        walk(0, size, 0, len(wanted))
    return nodes


class NodeMismatch(ProofError):
    """A proof node whose given hash differs from the one recomputed from the entries below it:
    one of `indices` (the bundle's entries in [start, end)) or the node itself was changed."""

    def __init__(self, start: int, end: int, indices: list[int]):
        self.start, self.end, self.indices = start, end, indices
        super().__init__(f"the proof's hash of log entries [{start}, {end}) differs from the one their "
                         "entries give")


def root_from_nodes(size: int, leaf_hashes: dict[int, bytes], nodes: dict[tuple[int, int], bytes], *,
                    compare: bool = True) -> bytes:
    """The root that the entries (index -> leaf hash) and the proof nodes lead to.

    1. Walk the tree from the root; a range holding no entry takes its hash from `nodes`
       (ProofError naming the range when it is missing).
    2. A range holding entries is hashed from below; where `nodes` also gives it (as a sibling in
       another entry's proof), the two must agree, else NodeMismatch for the first such range met
       in a left-to-right walk (no range below it disagrees).
    With `compare` false, step 2 compares nothing and a range made only of entries is hashed
    level by level: the same root, faster; run it again comparing to learn which entry is at
    fault when the root is not the one expected.
    """
    if size <= 0:
        raise ProofError(f"tree size {size} holds no entries")
    wanted = sorted(leaf_hashes)
    if not wanted:
        raise ProofError("no entries to prove")
    if wanted[0] < 0 or wanted[-1] >= size:
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise ProofError(f"entry {bad} is not in a tree of size {size}")
    sha = _sha256
    get = nodes.get
    first_mismatch: list[NodeMismatch] = []

    def walk(start: int, end: int, a: int, b: int) -> bytes:
        if end - start == 1:
            value = leaf_hashes[start]
        elif not compare and b - a == end - start:
            return root([leaf_hashes[i] for i in range(start, end)])
        else:
            mid = start + split_point(end - start)
            m = bisect_left(wanted, mid, a, b)
            if m > a:
                left = walk(start, mid, a, m)
            else:
                left = get((start, mid))
                if left is None:
                    raise ProofError(f"the proof lacks the hash of log entries [{start}, {mid})")
            if b > m:
                right = walk(mid, end, m, b)
            else:
                right = get((mid, end))
                if right is None:
                    raise ProofError(f"the proof lacks the hash of log entries [{mid}, {end})")
            value = sha(b"\x01" + left + right).digest()
        given = get((start, end)) if compare else None
        if given is not None and given != value and not first_mismatch:
            first_mismatch.append(NodeMismatch(start, end, wanted[a:b]))
        return value

    value = walk(0, size, 0, len(wanted))
    if first_mismatch:
        raise first_mismatch[0]
    return value


def inclusion_proof_from_nodes(index: int, size: int, nodes: dict[tuple[int, int], bytes]) -> list[bytes]:
    """Entry `index`'s own RFC 9162 inclusion proof, read from a `proof_nodes` table."""
    out = []
    for rng in path_ranges(index, size):
        if rng not in nodes:
            raise ProofError(f"the proof lacks the hash of log entries [{rng[0]}, {rng[1]})")
        out.append(nodes[rng])
    return out
