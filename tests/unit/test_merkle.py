"""Tests for provex.merkle, the registry's RFC 6962 transparency-log tree.

1. Every shared transparency-dev vector (../shared/vectors/merkle).
2. The RFC 6962 / Certificate Transparency 8-leaf reference tree: roots and proofs.
3. Exhaustive small trees and Hypothesis trees: generated proofs match a literal
   transcription of RFC 6962's MTH / PATH / PROOF, verify, and fail under every mutation.
4. CompactRange: roots, serialisation, the node visitor, malformed input.
5. A table of corrupted inputs for both verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provex.errors import VerificationError
from provex.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
    is_perfect,
    leaf_hash,
    node_hash,
    perfect_cover,
    proof_from_ranges,
    root,
    root_from_consistency_proof,
    root_from_cover,
    root_from_inclusion_proof,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------- helpers


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, transcribed literally (recursive, on leaf hashes)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], known: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if known else [ref_mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], known), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def make_leaves(count: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(count)]


def flip(value: bytes, bit: int) -> bytes:
    """``value`` with one bit flipped (``bit`` taken modulo its length in bits)."""
    bit %= 8 * len(value)
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def accepted(verify: Callable[..., None], *args: Any) -> bool:
    try:
        verify(*args)
    except VerificationError:
        return False
    return True


def proof_mutations(
    proof: Sequence[bytes], bit: int, junk: bytes
) -> Iterator[tuple[str, list[bytes]]]:
    """Every proof that differs from ``proof`` by one flipped bit, one drop or one insert."""
    for i in range(len(proof)):
        yield f"flip proof[{i}]", [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        yield f"drop proof[{i}]", [*proof[:i], *proof[i + 1 :]]
    for i in range(len(proof) + 1):
        yield f"insert junk at {i}", [*proof[:i], junk, *proof[i:]]
        if proof:
            dup = proof[min(i, len(proof) - 1)]
            yield f"insert duplicate at {i}", [*proof[:i], dup, *proof[i:]]
    if len(proof) > 1:
        yield "reversed", list(reversed(proof))


# ---------------------------------------------------------------- 1. shared vectors

VECTORS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle"
MISSING_VECTORS = f"shared Merkle vectors not found at {VECTORS_DIR}"


def _vector_files() -> list[Path]:
    if not VECTORS_DIR.is_dir():
        return []
    return sorted(
        path
        for folder in ("inclusion", "consistency")
        for path in (VECTORS_DIR / folder).rglob("*.json")
    )


VECTOR_FILES = _vector_files()
VECTOR_PARAMS = [
    pytest.param(path, id=path.relative_to(VECTORS_DIR).as_posix()) for path in VECTOR_FILES
] or [pytest.param(None, id="vectors-missing", marks=pytest.mark.skip(reason=MISSING_VECTORS))]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def test_vector_folder_has_enough_cases() -> None:
    if not VECTORS_DIR.is_dir():
        pytest.skip(MISSING_VECTORS)
    assert len(VECTOR_FILES) > 80
    assert any("inclusion" in p.parts for p in VECTOR_FILES)
    assert any("consistency" in p.parts for p in VECTOR_FILES)


@pytest.mark.parametrize("path", VECTOR_PARAMS)
def test_shared_vector(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    proof = [_b64(h) for h in case["proof"] or []]
    if "leafIdx" in case:
        verify: Callable[[], None] = lambda: verify_inclusion(  # noqa: E731
            _b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"])
        )
    else:
        verify = lambda: verify_consistency(  # noqa: E731
            case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"])
        )
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify()
    else:
        verify()


# ---------------------------------------------------------------- 2. RFC 6962 reference tree

CT_ENTRIES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_LEAVES = [leaf_hash(entry) for entry in CT_ENTRIES]

# Tree size -> root (certificate-transparency / transparency-dev testonly constants).
CT_ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (leaf index, tree size) -> proof, from transparency-dev proof/verify_test.go.
CT_INCLUSION_PROOFS = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 1): [],
}

# (size1, size2) -> proof, from the same file.
CT_CONSISTENCY_PROOFS = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (6, 7): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def test_hash_primitives() -> None:
    assert hashlib.sha256(b"").hexdigest() == EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert HASH_SIZE == len(EMPTY_ROOT) == 32
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert node_hash(left, right) != node_hash(right, left)
    # Domain separation: a leaf is never mistaken for a node over the same bytes.
    assert leaf_hash(left + right) != node_hash(left, right)


@pytest.mark.parametrize(("size", "want"), CT_ROOTS.items(), ids=lambda v: str(v)[:8])
def test_reference_tree_roots(size: int, want: str) -> None:
    assert root(CT_LEAVES[:size]).hex() == want
    assert ref_mth(CT_LEAVES[:size]).hex() == want
    compact = CompactRange()
    compact.extend(CT_LEAVES[:size])
    assert compact.root().hex() == want


@pytest.mark.parametrize(("index", "size"), CT_INCLUSION_PROOFS)
def test_reference_inclusion_proofs(index: int, size: int) -> None:
    want = [bytes.fromhex(h) for h in CT_INCLUSION_PROOFS[index, size]]
    assert inclusion_proof(CT_LEAVES, index, size) == want
    verify_inclusion(CT_LEAVES[index], index, size, want, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("size1", "size2"), CT_CONSISTENCY_PROOFS)
def test_reference_consistency_proofs(size1: int, size2: int) -> None:
    want = [bytes.fromhex(h) for h in CT_CONSISTENCY_PROOFS[size1, size2]]
    assert consistency_proof(CT_LEAVES, size1, size2) == want
    root1, root2 = bytes.fromhex(CT_ROOTS[size1]), bytes.fromhex(CT_ROOTS[size2])
    verify_consistency(size1, size2, want, root1, root2)
    assert root_from_consistency_proof(size1, size2, want, root1) == root2


def test_reference_proof_ranges() -> None:
    assert inclusion_proof_ranges(0, 1) == []
    assert inclusion_proof_ranges(5, 8) == [(4, 5), (6, 8), (0, 4)]
    assert inclusion_proof_ranges(6, 7) == [(4, 6), (0, 4)]
    assert consistency_proof_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert consistency_proof_ranges(4, 7) == [(4, 7)]
    assert consistency_proof_ranges(3, 3) == []


# ---------------------------------------------------------------- 3a. exhaustive small trees

SMALL = 40


def test_generators_match_rfc_text_for_all_small_trees() -> None:
    leaves = make_leaves(SMALL)
    for size in range(1, SMALL + 1):
        tree = leaves[:size]
        tree_root = ref_mth(tree)
        assert root(tree) == tree_root
        for index in range(size):
            proof = inclusion_proof(leaves, index, size)
            assert proof == ref_path(index, tree), (index, size)
            verify_inclusion(tree[index], index, size, proof, tree_root)
        for size1 in range(1, size + 1):
            proof = consistency_proof(leaves, size1, size)
            assert proof == ref_subproof(size1, tree, True), (size1, size)
            verify_consistency(size1, size, proof, ref_mth(leaves[:size1]), tree_root)


def test_ranges_are_subtrees_and_storage_can_serve_them() -> None:
    """Serve proofs the way storage would: perfect nodes from a cache, the rest folded."""
    leaves = make_leaves(SMALL)
    cache: dict[tuple[int, int], bytes] = {}
    compact = CompactRange()
    compact.extend(leaves, visit=lambda s, e, h: cache.__setitem__((s, e), h))

    def from_storage(start: int, end: int) -> bytes:
        if is_perfect(start, end):
            return cache[start, end]
        return root_from_cover([cache[r] for r in perfect_cover(start, end)])

    for size in range(1, SMALL + 1):
        for index in range(size):
            ranges = inclusion_proof_ranges(index, size)
            assert all(ref_mth(leaves[s:e]) == subtree_root(leaves, s, e) for s, e in ranges)
            assert proof_from_ranges(ranges, from_storage) == inclusion_proof(leaves, index, size)
        for size1 in range(1, size + 1):
            ranges = consistency_proof_ranges(size1, size)
            want = consistency_proof(leaves, size1, size)
            assert proof_from_ranges(ranges, from_storage) == want


def test_perfect_cover_and_is_perfect() -> None:
    assert perfect_cover(0, 0) == []
    assert perfect_cover(0, 13) == [(0, 8), (8, 12), (12, 13)]
    assert perfect_cover(8, 13) == [(8, 12), (12, 13)]
    assert perfect_cover(6, 8) == [(6, 8)]
    with pytest.raises(ValueError, match="not a subtree"):
        perfect_cover(6, 9)
    with pytest.raises(ValueError, match="invalid range"):
        perfect_cover(5, 4)
    assert is_perfect(0, 1)
    assert is_perfect(8, 16)
    assert not is_perfect(4, 12)  # Size 8 but not aligned to 8.
    assert not is_perfect(0, 3)
    assert not is_perfect(3, 3)
    assert not is_perfect(-1, 0)
    assert root_from_cover([]) == EMPTY_ROOT
    leaves = make_leaves(SMALL)
    for end in range(SMALL + 1):
        hashes = [subtree_root(leaves, s, e) for s, e in perfect_cover(0, end)]
        assert all(is_perfect(s, e) for s, e in perfect_cover(0, end))
        assert root_from_cover(hashes) == ref_mth(leaves[:end])


def test_generator_misuse_raises_value_error() -> None:
    leaves = make_leaves(5)
    for index, size in [(-1, 5), (5, 5), (0, 0)]:
        with pytest.raises(ValueError, match="out of range"):
            inclusion_proof_ranges(index, size)
    for size1, size2 in [(0, 5), (0, 0), (3, 2), (-1, 2)]:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_proof_ranges(size1, size2)
    with pytest.raises(ValueError, match="exceeds"):
        inclusion_proof(leaves, 0, 6)
    with pytest.raises(ValueError, match="exceeds"):
        consistency_proof(leaves, 1, 6)
    with pytest.raises(ValueError, match="outside"):
        subtree_root(leaves, 2, 6)
    with pytest.raises(ValueError, match="outside"):
        subtree_root(leaves, 3, 2)
    with pytest.raises(ValueError, match="bytes"):
        proof_from_ranges([(0, 1)], lambda s, e: b"short")
    assert subtree_root(leaves, 2, 2) == EMPTY_ROOT
    assert inclusion_proof(leaves, 4) == inclusion_proof(leaves, 4, 5)
    assert consistency_proof(leaves, 2) == consistency_proof(leaves, 2, 5)


def test_inclusion_proofs_do_not_bind_the_tree_size_alone() -> None:
    """An RFC 6962 property, pinned so nobody "fixes" it: size must come with its root.

    The proof for leaf 0 of 3 also checks out as leaf 0 of 4 against the size-3
    root (the verifier cannot tell a leaf hash from a node hash). That is why
    the property tests pair a changed size with that size's honest root, and
    why nodes only verify against (size, root) pairs from signed checkpoints.
    """
    proof = inclusion_proof(CT_LEAVES, 0, 3)
    verify_inclusion(CT_LEAVES[0], 0, 4, proof, root(CT_LEAVES[:3]))
    with pytest.raises(VerificationError):
        verify_inclusion(CT_LEAVES[0], 0, 4, proof, root(CT_LEAVES[:4]))


# ---------------------------------------------------------------- 3b. Hypothesis properties

MAX_SIZE = 300
SALTS = st.binary(max_size=8)
BITS = st.integers(min_value=0, max_value=8 * HASH_SIZE - 1)
JUNK = st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """(size + 1 leaves, size, index): the extra leaf lets tests build the size + 1 tree."""
    size = draw(st.integers(min_value=1, max_value=MAX_SIZE))
    index = draw(st.integers(min_value=0, max_value=size - 1))
    return make_leaves(size + 1, draw(SALTS)), size, index


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """(size2 + 1 leaves, size1, size2) with 1 <= size1 <= size2."""
    size2 = draw(st.integers(min_value=1, max_value=MAX_SIZE))
    size1 = draw(st.integers(min_value=1, max_value=size2))
    return make_leaves(size2 + 1, draw(SALTS)), size1, size2


@settings(max_examples=300, deadline=None)
@given(case=inclusion_cases(), bit=BITS, junk=JUNK)
def test_inclusion_proofs_verify_and_every_mutation_fails(
    case: tuple[list[bytes], int, int], bit: int, junk: bytes
) -> None:
    leaves, size, index = case
    roots = {n: root(leaves[:n]) for n in (size - 1, size, size + 1)}
    leaf, tree_root = leaves[index], roots[size]
    proof = inclusion_proof(leaves, index, size)
    verify_inclusion(leaf, index, size, proof, tree_root)
    assert root_from_inclusion_proof(leaf, index, size, proof) == tree_root

    args = (leaf, index, size, proof, tree_root)
    probes: dict[str, tuple[bytes, int, int, Sequence[bytes], bytes]] = {
        "index - 1": (leaf, index - 1, size, proof, tree_root),
        "index + 1": (leaf, index + 1, size, proof, tree_root),
        "index ^ 2": (leaf, index ^ 2, size, proof, tree_root),
        # A changed size is paired with that size's own root (see the test above).
        "size - 1": (leaf, index, size - 1, proof, roots[size - 1]),
        "size + 1": (leaf, index, size + 1, proof, roots[size + 1]),
        "other leaf": (leaves[(index + 1) % len(leaves)], index, size, proof, tree_root),
        "flipped leaf": (flip(leaf, bit), index, size, proof, tree_root),
        "junk leaf": (junk, index, size, proof, tree_root),
        "entry instead of leaf hash": (leaf_hash(leaf), index, size, proof, tree_root),
        "flipped root": (leaf, index, size, proof, flip(tree_root, bit)),
        "older root": (leaf, index, size, proof, roots[size - 1]),
        "newer root": (leaf, index, size, proof, roots[size + 1]),
        "empty root": (leaf, index, size, proof, EMPTY_ROOT),
    }
    for name, mutated in proof_mutations(proof, bit, junk):
        probes[name] = (leaf, index, size, mutated, tree_root)
    wrongly_accepted = [
        name
        for name, probe in probes.items()
        if probe != args and accepted(verify_inclusion, *probe)
    ]
    assert not wrongly_accepted


@settings(max_examples=300, deadline=None)
@given(case=consistency_cases(), bit=BITS, junk=JUNK)
def test_consistency_proofs_verify_and_every_mutation_fails(
    case: tuple[list[bytes], int, int], bit: int, junk: bytes
) -> None:
    leaves, size1, size2 = case
    roots = {
        n: root(leaves[:n]) for n in {size1 - 1, size1, size1 + 1, size2 - 1, size2, size2 + 1}
    }
    root1, root2 = roots[size1], roots[size2]
    proof = consistency_proof(leaves, size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)
    assert root_from_consistency_proof(size1, size2, proof, root1) == root2
    if size1 == size2:
        assert proof == []
        with pytest.raises(VerificationError):
            verify_consistency(size1, size2, [junk], root1, root2)
        with pytest.raises(VerificationError):
            verify_consistency(size1, size2, proof, root1, flip(root2, bit))
        return

    args = (size1, size2, proof, root1, root2)
    probes: dict[str, tuple[int, int, Sequence[bytes], bytes, bytes]] = {
        # A changed size is paired with that size's own root, as for inclusion.
        "size1 - 1": (size1 - 1, size2, proof, roots[size1 - 1], root2),
        "size1 + 1": (size1 + 1, size2, proof, roots[size1 + 1], root2),
        "size2 - 1": (size1, size2 - 1, proof, root1, roots[size2 - 1]),
        "size2 + 1": (size1, size2 + 1, proof, root1, roots[size2 + 1]),
        "size1 and size2 swapped": (size2, size1, proof, root2, root1),
        "swapped roots": (size1, size2, proof, root2, root1),
        "same root twice": (size1, size2, proof, root1, root1),
        "flipped root1": (size1, size2, proof, flip(root1, bit), root2),
        "flipped root2": (size1, size2, proof, root1, flip(root2, bit)),
        "junk root1": (size1, size2, proof, junk, root2),
        "junk root2": (size1, size2, proof, root1, junk),
        "empty proof": (size1, size2, [], root1, root2),
        "size1 zero": (0, size2, proof, EMPTY_ROOT, root2),
    }
    for name, mutated in proof_mutations(proof, bit, junk):
        probes[name] = (size1, size2, mutated, root1, root2)
    wrongly_accepted = [
        name
        for name, probe in probes.items()
        if probe != args and accepted(verify_consistency, *probe)
    ]
    assert not wrongly_accepted


# ---------------------------------------------------------------- 4. CompactRange


def test_compact_range_matches_root_for_every_size() -> None:
    leaves = make_leaves(200)
    compact = CompactRange()
    for size in range(201):
        assert compact.size == size
        want = ref_mth(leaves[:size])
        assert compact.root() == want == root(leaves[:size])
        cover = perfect_cover(0, size)
        assert compact.hashes == [ref_mth(leaves[s:e]) for s, e in cover]
        restored = CompactRange.from_bytes(size, compact.to_bytes())
        assert restored == compact
        assert restored.root() == want
        if size < 200:
            compact.append(leaves[size])


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    restore_at=st.integers(min_value=0, max_value=12),
)
def test_compact_range_extend_in_chunks_and_restore(chunks: list[int], restore_at: int) -> None:
    leaves = make_leaves(sum(chunks))
    compact, done = CompactRange(), 0
    for i, count in enumerate(chunks):
        if i == restore_at:  # Persist and restore mid-way, as the sequencer does per batch.
            compact = CompactRange.from_bytes(compact.size, compact.to_bytes())
        compact.extend(leaves[done : done + count])
        done += count
        assert compact.size == done
        assert compact.root() == ref_mth(leaves[:done])
        assert len(compact.to_bytes()) == HASH_SIZE * done.bit_count()


def test_compact_range_visitor_reports_every_perfect_subtree_once() -> None:
    leaves = make_leaves(37)
    seen: list[tuple[int, int, bytes]] = []
    CompactRange().extend(leaves, visit=lambda s, e, h: seen.append((s, e, h)))
    ranges = [(s, e) for s, e, _ in seen]
    want = {
        (start, start + width)
        for width in (1, 2, 4, 8, 16, 32)
        for start in range(0, 37 - width + 1, width)
    }
    assert len(ranges) == len(set(ranges))
    assert set(ranges) == want
    assert all(h == ref_mth(leaves[s:e]) for s, e, h in seen)


def test_compact_range_copy_equality_and_repr() -> None:
    compact = CompactRange()
    compact.extend(make_leaves(5))
    clone = compact.copy()
    assert clone == compact
    clone.append(leaf_hash(b"more"))
    assert clone != compact
    assert compact.size == 5
    assert compact != "not a range"
    assert compact.root().hex() in repr(compact)
    hashes = compact.hashes
    hashes.clear()  # A copy: the range itself is unchanged.
    assert len(compact.hashes) == 2
    assert CompactRange().root() == EMPTY_ROOT
    assert CompactRange().to_bytes() == b""
    assert CompactRange.from_hashes(5, compact.hashes) == compact


@pytest.mark.parametrize(
    ("size", "data"),
    [
        pytest.param(-1, b"", id="negative size"),
        pytest.param(0, b"\x00" * 32, id="data for an empty range"),
        pytest.param(1, b"", id="missing hash"),
        pytest.param(3, b"\x00" * 32, id="one hash short"),
        pytest.param(3, b"\x00" * 96, id="one hash too many"),
        pytest.param(1, b"\x00" * 31, id="truncated hash"),
        pytest.param(1, b"\x00" * 33, id="trailing byte"),
        pytest.param(2**64 - 1, b"\x00" * 32, id="huge size, one hash"),
    ],
)
def test_compact_range_from_bytes_rejects_malformed_data(size: int, data: bytes) -> None:
    """Malformed stored state is a storage fault: ValueError, not VerificationError."""
    with pytest.raises(ValueError, match="compact range"):
        CompactRange.from_bytes(size, data)


def test_compact_range_rejects_bad_hashes() -> None:
    with pytest.raises(ValueError, match="hash 0 has 31 bytes"):
        CompactRange.from_hashes(1, [b"\x00" * 31])
    with pytest.raises(ValueError, match="needs 2 hashes"):
        CompactRange.from_hashes(3, [b"\x00" * 32])
    with pytest.raises(ValueError, match="negative"):
        CompactRange.from_hashes(-1, [])
    compact = CompactRange()
    with pytest.raises(ValueError, match="leaf hash has 3 bytes"):
        compact.append(b"abc")
    assert compact.size == 0
    with pytest.raises(ValueError, match="leaf hash"):
        root([b"abc"])


# ---------------------------------------------------------------- 5. corrupted inputs

T8 = bytes.fromhex(CT_ROOTS[8])
T4 = bytes.fromhex(CT_ROOTS[4])
T6 = bytes.fromhex(CT_ROOTS[6])
LEAF2 = CT_LEAVES[2]
INCL_2_8 = inclusion_proof(CT_LEAVES, 2, 8)  # Three hashes.
CONS_6_8 = consistency_proof(CT_LEAVES, 6, 8)  # Three hashes, seed included.
CONS_4_8 = consistency_proof(CT_LEAVES, 4, 8)  # One hash: size1 is a power of two.
H = b"\x11" * 32

# name -> (arguments of verify_inclusion(leaf_hash, index, size, proof, root), message fragment)
BAD_INCLUSION: dict[str, tuple[tuple[bytes, int, int, list[bytes], bytes], str]] = {
    "negative index": ((LEAF2, -1, 8, INCL_2_8, T8), "negative"),
    "negative size": ((LEAF2, 0, -8, INCL_2_8, T8), "negative"),
    "index equals size": ((LEAF2, 8, 8, INCL_2_8, T8), "out of range"),
    "index beyond size": ((LEAF2, 9, 8, INCL_2_8, T8), "out of range"),
    "index 2**64 - 1": ((LEAF2, 2**64 - 1, 8, INCL_2_8, T8), "out of range"),
    "empty tree": ((LEAF2, 0, 0, [], EMPTY_ROOT), "out of range"),
    "empty leaf hash": ((b"", 2, 8, INCL_2_8, T8), "leaf hash has 0 bytes"),
    "short leaf hash": ((LEAF2[:31], 2, 8, INCL_2_8, T8), "leaf hash has 31 bytes"),
    "long leaf hash": ((LEAF2 + b"\x00", 2, 8, INCL_2_8, T8), "leaf hash has 33 bytes"),
    "raw entry as leaf hash": ((CT_ENTRIES[2], 2, 8, INCL_2_8, T8), "leaf hash has 1 bytes"),
    "empty root": ((LEAF2, 2, 8, INCL_2_8, b""), "root has 0 bytes"),
    "short root": ((LEAF2, 2, 8, INCL_2_8, T8[:31]), "root has 31 bytes"),
    "long root": ((LEAF2, 2, 8, INCL_2_8, T8 + b"\x00"), "root has 33 bytes"),
    "short proof hash": ((LEAF2, 2, 8, [INCL_2_8[0][:31], *INCL_2_8[1:]], T8), "proof hash 0"),
    "long proof hash": ((LEAF2, 2, 8, [*INCL_2_8[:2], INCL_2_8[2] + b"\x00"], T8), "proof hash 2"),
    "empty proof hash": ((LEAF2, 2, 8, [*INCL_2_8, b""], T8), "proof hash 3"),
    "proof too short": ((LEAF2, 2, 8, INCL_2_8[:2], T8), "has 2 hashes, want 3"),
    "proof too long": ((LEAF2, 2, 8, [*INCL_2_8, H], T8), "has 4 hashes, want 3"),
    "empty proof": ((LEAF2, 2, 8, [], T8), "has 0 hashes, want 3"),
    # A malformed hash is named before a wrong count, and a bad border hash is caught too.
    "short proof hash, proof too long": (
        (LEAF2, 2, 8, [*INCL_2_8, H[:5]], T8),
        "proof hash 3 has 5 bytes",
    ),
    "short border hash": ((LEAF2, 4, 6, [H, H[:31]], T8), "proof hash 1 has 31 bytes"),
    "proof for single leaf tree": ((CT_LEAVES[0], 0, 1, [H], CT_LEAVES[0]), "want 0"),
    "wrong leaf": ((CT_LEAVES[3], 2, 8, INCL_2_8, T8), "gives root"),
    "wrong index": ((LEAF2, 3, 8, INCL_2_8, T8), "gives root"),
    "wrong size": ((LEAF2, 2, 7, INCL_2_8, bytes.fromhex(CT_ROOTS[7])), "gives root"),
    "wrong root": ((LEAF2, 2, 8, INCL_2_8, T6), "gives root"),
    "empty tree root": ((LEAF2, 2, 8, INCL_2_8, EMPTY_ROOT), "gives root"),
    "reordered proof": ((LEAF2, 2, 8, INCL_2_8[::-1], T8), "gives root"),
    "corrupt proof hash": ((LEAF2, 2, 8, [INCL_2_8[0], H, INCL_2_8[2]], T8), "gives root"),
}

# name -> (arguments of verify_consistency(size1, size2, proof, root1, root2), message fragment)
BAD_CONSISTENCY: dict[str, tuple[tuple[int, int, list[bytes], bytes, bytes], str]] = {
    "negative size1": ((-1, 8, CONS_6_8, T6, T8), "size1 -1 is negative"),
    "negative size2": ((6, -8, CONS_6_8, T6, T8), "size2 -8 is negative"),
    "size1 zero": ((0, 8, [], EMPTY_ROOT, T8), "empty tree"),
    "both sizes zero, roots equal": ((0, 0, [], EMPTY_ROOT, EMPTY_ROOT), "empty tree"),
    "size1 greater than size2": ((8, 6, CONS_6_8, T8, T6), "greater"),
    "equal sizes with a proof": ((8, 8, [H], T8, T8), "proof has 1 hashes, want 0"),
    "equal sizes, different roots": ((8, 8, [], T8, T6), "root1 and root2 differ"),
    "short root1": ((6, 8, CONS_6_8, T6[:31], T8), "root1 has 31 bytes"),
    "empty root1": ((6, 8, CONS_6_8, b"", T8), "root1 has 0 bytes"),
    "long root2": ((6, 8, CONS_6_8, T6, T8 + b"\x00"), "root2 has 33 bytes"),
    "empty root2": ((6, 8, CONS_6_8, T6, b""), "root2 has 0 bytes"),
    "short proof hash": ((6, 8, [CONS_6_8[0][:31], *CONS_6_8[1:]], T6, T8), "proof hash 0"),
    "long proof hash": ((6, 8, [*CONS_6_8[:2], CONS_6_8[2] + b"\x00"], T6, T8), "proof hash 2"),
    "proof too short": ((6, 8, CONS_6_8[:2], T6, T8), "has 2 hashes, want 3"),
    "proof too long": ((6, 8, [*CONS_6_8, H], T6, T8), "has 4 hashes, want 3"),
    "empty proof": ((6, 8, [], T6, T8), "has 0 hashes, want 3"),
    "seed given for power-of-two size1": ((4, 8, [T4, *CONS_4_8], T4, T8), "has 2 hashes, want 1"),
    "wrong root1": ((6, 8, CONS_6_8, T4, T8), "want root1"),
    "wrong root2": ((6, 8, CONS_6_8, T6, T4), "want root2"),
    "swapped roots": ((6, 8, CONS_6_8, T8, T6), "want root1"),
    "wrong size1": ((5, 8, CONS_6_8, bytes.fromhex(CT_ROOTS[5]), T8), "has 3 hashes, want 4"),
    "wrong size2": ((6, 7, CONS_6_8, T6, bytes.fromhex(CT_ROOTS[7])), "want root2"),
    "reordered proof": ((6, 8, CONS_6_8[::-1], T6, T8), "want root1"),
    "corrupt last proof hash": ((6, 8, [*CONS_6_8[:2], H], T6, T8), "want root1"),
    "corrupt power-of-two proof": ((4, 8, [H], T4, T8), "want root2"),
}


def test_corruption_tables_start_from_valid_proofs() -> None:
    verify_inclusion(LEAF2, 2, 8, INCL_2_8, T8)
    verify_consistency(6, 8, CONS_6_8, T6, T8)
    verify_consistency(4, 8, CONS_4_8, T4, T8)
    verify_consistency(8, 8, [], T8, T8)


@pytest.mark.parametrize(("args", "message"), BAD_INCLUSION.values(), ids=BAD_INCLUSION)
def test_verify_inclusion_rejects(
    args: tuple[bytes, int, int, list[bytes], bytes], message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        verify_inclusion(*args)


@pytest.mark.parametrize(("args", "message"), BAD_CONSISTENCY.values(), ids=BAD_CONSISTENCY)
def test_verify_consistency_rejects(
    args: tuple[int, int, list[bytes], bytes, bytes], message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        verify_consistency(*args)
