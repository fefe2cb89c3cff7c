"""RFC 6962 Merkle trees (evidence.merkle) against the published test vectors, and proofs made and
checked for every size and entry of small trees.

The vectors are RFC 6962's as used by Certificate Transparency's Go verifier: the leaves, the
roots for tree sizes 1 to 8, and the inclusion and consistency proofs, copied from
transparency-dev/merkle, proof/verify_test.go (commit 02194e9afb6c1d95b5381350007963aa70fff472;
the same vectors as google/trillian's merkle/log_verifier_test.go). Their inclusion proofs give
the leaf as a 1-based number; here indices are 0-based.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from evidence import merkle

LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = bytes.fromhex
# (0-based leaf index, tree size, proof)
INCLUSION = [
    (0, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (5, 8, [H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 3, [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]),
    (6, 8, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
    (2, 5, [H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")]),
    (6, 7, [H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")]),
]
LEAF_HASHES = [merkle.leaf_hash(d) for d in LEAVES]


def _recursive_root(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1's MTH, written as the RFC states it."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(_recursive_root(hashes[:k]), _recursive_root(hashes[k:]))


def test_empty_tree_hash_is_sha256_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == H("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_heads_match_rfc6962_vectors(size: int) -> None:
    assert merkle.root(LEAF_HASHES[:size]) == ROOTS[size - 1]
    assert merkle.subtree_hash(LEAF_HASHES, 0, size) == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_vectors_and_verify(index: int, size: int, proof: list[bytes]) -> None:
    assert merkle.inclusion_proof(index, size, LEAF_HASHES) == proof
    merkle.verify_inclusion(index, size, LEAF_HASHES[index], proof, ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proofs_match_vectors_and_verify(first: int, second: int, proof: list[bytes]) -> None:
    assert merkle.consistency_proof(first, second, LEAF_HASHES) == proof
    merkle.verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], proof)


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 8]) + h[1:]


@pytest.mark.parametrize(("index", "size", "proof"), [v for v in INCLUSION if v[2]])
def test_a_changed_inclusion_proof_is_refused(index: int, size: int, proof: list[bytes]) -> None:
    root = ROOTS[size - 1]
    leaf = LEAF_HASHES[index]
    wrong = [
        (index ^ 1, size, leaf, proof, root), (index, size * 2, leaf, proof, root),
        (index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root), (index, size, leaf, proof, merkle.EMPTY_ROOT),
        (index, size, leaf, proof + [root], root), (index, size, leaf, [root] + proof, root),
        (index, size, leaf, proof[:-1], root),
    ] + [(index, size, leaf, proof[:i] + [_flip(proof[i])] + proof[i + 1:], root) for i in range(len(proof))]
    if size // 2 > index:
        wrong.append((index, size // 2, leaf, proof, root))
    for args in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)


@pytest.mark.parametrize(("first", "second", "proof"), [v for v in CONSISTENCY if v[2]])
def test_a_changed_consistency_proof_is_refused(first: int, second: int, proof: list[bytes]) -> None:
    r1, r2 = ROOTS[first - 1], ROOTS[second - 1]
    wrong = [
        (first, second, r2, r1, proof), (first, second, merkle.EMPTY_ROOT, r2, proof),
        (first, second, r1, merkle.EMPTY_ROOT, proof), (first, second, r1, r2, []),
        (first, second, r1, r2, proof + [r1]), (first, second, r1, r2, [r2] + proof),
        (first, second, r1, r2, proof[:-1]), (second, first, r2, r1, proof),
    ] + [(first, second, r1, r2, proof[:i] + [_flip(proof[i])] + proof[i + 1:]) for i in range(len(proof))]
    if first + 1 < second:
        wrong.append((first + 1, second, r1, r2, proof))
    for args in wrong:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)


def test_trivial_consistency_cases() -> None:
    merkle.verify_consistency(0, 5, b"\0" * 32, ROOTS[4], [])       # the empty tree is a prefix of any
    merkle.verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    with pytest.raises(merkle.ProofError, match="same size 3 differ"):
        merkle.verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    with pytest.raises(merkle.ProofError, match="a log only grows"):
        merkle.verify_consistency(4, 3, ROOTS[3], ROOTS[2], [])


def _random_leaves(n: int, rng: random.Random) -> list[bytes]:
    return [merkle.leaf_hash(rng.randbytes(rng.randint(0, 40))) for _ in range(n)]


def test_every_proof_of_trees_up_to_64_entries_round_trips() -> None:
    """For sizes 1..64: the root equals the RFC's recursive definition; every entry's inclusion
    proof verifies and fails for its neighbour; every consistency proof verifies and fails against
    a tree that differs in one earlier entry. Leaves come from a callable reading ranges, as a
    database-backed log will give them."""
    rng = random.Random(6962)
    for size in range(1, 65):
        hashes = _random_leaves(size, rng)
        reads = []

        def read(start: int, end: int) -> list[bytes]:
            reads.append((start, end))
            return hashes[start:end]

        head = merkle.root(hashes)
        assert head == _recursive_root(hashes)
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, read)
            assert proof == merkle.inclusion_proof(index, size, hashes)
            merkle.verify_inclusion(index, size, hashes[index], proof, head)
            if size > 1:
                with pytest.raises(merkle.ProofError):
                    merkle.verify_inclusion((index + 1) % size, size, hashes[index], proof, head)
        assert reads or size == 1  # a one-entry tree needs no other leaf
        for first in range(1, size + 1):
            proof = merkle.consistency_proof(first, size, read)
            merkle.verify_consistency(first, size, merkle.root(hashes[:first]), head, proof)
            if first < size:
                changed = list(hashes)
                changed[rng.randrange(first)] = merkle.leaf_hash(b"rewritten")
                with pytest.raises(merkle.ProofError):
                    merkle.verify_consistency(first, size, merkle.root(hashes[:first]), merkle.root(changed),
                                              merkle.consistency_proof(first, size, changed))


def test_a_cache_of_complete_subtrees_gives_the_same_proofs_and_is_kept_as_the_log_grows() -> None:
    rng = random.Random(9162)
    hashes = _random_leaves(300, rng)
    cache: dict = {}
    for size in (100, 200, 300):
        for index in (0, size // 3, size - 1):
            assert merkle.inclusion_proof(index, size, hashes, cache) == merkle.inclusion_proof(index, size, hashes)
        assert merkle.consistency_proof(size // 2, size, hashes, cache) == merkle.consistency_proof(size // 2, size, hashes)
    assert cache and all((end - start) & (end - start - 1) == 0 for start, end in cache)


def test_proof_nodes_hold_every_entrys_inclusion_proof_and_lead_to_the_root() -> None:
    rng = random.Random(42)
    for size in range(1, 65):
        hashes = _random_leaves(size, rng)
        chosen = sorted(rng.sample(range(size), rng.randint(1, size)))
        nodes = merkle.proof_nodes(chosen, size, hashes)
        for index in chosen:
            assert merkle.inclusion_proof_from_nodes(index, size, nodes) == merkle.inclusion_proof(index, size, hashes)
        assert merkle.root_from_nodes(size, {i: hashes[i] for i in chosen}, nodes) == merkle.root(hashes)


def test_a_changed_entry_under_proof_nodes_is_named() -> None:
    rng = random.Random(7)
    hashes = _random_leaves(40, rng)
    chosen = [3, 4, 17, 30]
    nodes = merkle.proof_nodes(chosen, 40, hashes)
    given = {i: hashes[i] for i in chosen}
    given[17] = merkle.leaf_hash(b"tampered")
    with pytest.raises(merkle.NodeMismatch) as caught:
        merkle.root_from_nodes(40, given, nodes)
    assert 17 in caught.value.indices and len(caught.value.indices) == 1
    given[17] = hashes[17]
    nodes.pop(next(iter(nodes)))
    with pytest.raises(merkle.ProofError, match="lacks the hash of log entries"):
        merkle.root_from_nodes(40, given, nodes)


def test_out_of_range_arguments_are_refused_with_a_reason() -> None:
    with pytest.raises(merkle.ProofError, match="entry 8 is not in a tree of size 8"):
        merkle.inclusion_proof(8, 8, LEAF_HASHES)
    with pytest.raises(merkle.ProofError, match="no consistency proof from tree size 5 to 3"):
        merkle.consistency_proof(5, 3, LEAF_HASHES)
    with pytest.raises(merkle.ProofError, match="returned 2 leaf hashes"):
        merkle.inclusion_proof(0, 4, lambda start, end: LEAF_HASHES[:2])


def test_the_fast_root_from_nodes_equals_the_comparing_one() -> None:
    rng = random.Random(11)
    for size in (1, 2, 3, 7, 8, 9, 33, 64, 100):
        hashes = _random_leaves(size, rng)
        for chosen in (list(range(size)), sorted(rng.sample(range(size), max(1, size // 3)))):
            nodes = merkle.proof_nodes(chosen, size, hashes)
            given = {i: hashes[i] for i in chosen}
            assert merkle.root_from_nodes(size, given, nodes, compare=False) == merkle.root(hashes)
            assert merkle.root_from_nodes(size, given, nodes) == merkle.root(hashes)
