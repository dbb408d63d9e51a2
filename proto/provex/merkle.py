"""RFC 6962 Merkle trees for the registry's transparency log.

The national registry appends every entry it signs to one append-only log
(DESIGN.md section 5). This module is everything Provex needs from the tree
itself, modelled on transparency-dev/merkle:

* hashing: :func:`leaf_hash`, :func:`node_hash`, :data:`EMPTY_ROOT` and the tree
  head :func:`root` (RFC 6962 ``MTH``), :func:`subtree_root` for any leaf range;
* proof generation as *ranges* (:func:`inclusion_proof_ranges`,
  :func:`consistency_proof_ranges`): the half-open leaf ranges ``[start, end)``
  whose subtree hashes, in order, make the proof. Storage turns them into
  hashes with :func:`proof_from_ranges`; ranges for which :func:`is_perfect`
  holds never change once written and can be cached, the others (at most one
  per proof level, on the right edge of the tree) are folded from their
  :func:`perfect_cover` with :func:`root_from_cover`.
  :func:`inclusion_proof` and :func:`consistency_proof` do the same from an
  in-memory list of leaf hashes;
* :class:`CompactRange`, the sequencer's incremental tree: the roots of the
  perfect subtrees covering ``[0, size)``, persisted in one row;
* verification (:func:`verify_inclusion`, :func:`verify_consistency`), which
  raises :class:`~provex.errors.VerificationError` for every failure. The
  verifiers follow RFC 9162 section 2.1.3.2 / 2.1.4.2 (bit arithmetic, as in
  transparency-dev's ``proof/verify.go``) and share no code with the proof
  generators, so the tests cross-check two independent implementations.

Sizes and indices are Python ints; every hash is 32 bytes (SHA-256).
Misuse of the generating functions (an index out of range, a malformed hash
from storage) raises :class:`ValueError`: that is a bug in the caller, not a
proof that failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

from provex.errors import VerificationError

__all__ = (
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeVisitor",
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "is_perfect",
    "leaf_hash",
    "node_hash",
    "perfect_cover",
    "proof_from_ranges",
    "root",
    "root_from_consistency_proof",
    "root_from_cover",
    "root_from_inclusion_proof",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
)

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 6962 section 2.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_LEAF_HASHER = hashlib.sha256(_LEAF_PREFIX)

Range: TypeAlias = tuple[int, int]
"""A half-open range of leaf indices ``[start, end)``."""

NodeVisitor: TypeAlias = Callable[[int, int, bytes], None]
"""Called as ``visit(start, end, hash)`` for each perfect subtree a CompactRange completes."""


# ---------------------------------------------------------------- hashing


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ entry)."""
    hasher = _LEAF_HASHER.copy()  # Not _LEAF_PREFIX + entry: no copy of a large entry.
    hasher.update(entry)
    return hasher.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The tree head MTH of ``leaf_hashes``; :data:`EMPTY_ROOT` for no leaves."""
    return subtree_root(leaf_hashes, 0, len(leaf_hashes))


def subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of ``leaf_hashes[start:end]`` (:data:`EMPTY_ROOT` if the range is empty)."""
    if not 0 <= start <= end <= len(leaf_hashes):
        raise ValueError(f"range [{start}, {end}) is outside [0, {len(leaf_hashes)})")
    compact = CompactRange()
    compact.extend(leaf_hashes[start:end])
    return compact.root()


def is_perfect(start: int, end: int) -> bool:
    """Whether ``[start, end)`` is a perfect subtree: a power-of-two size, aligned to it.

    A perfect subtree's hash never changes as the log grows, so storage can cache it.
    """
    size = end - start
    return start >= 0 and size > 0 and size & (size - 1) == 0 and start % size == 0


def perfect_cover(start: int, end: int) -> list[Range]:
    """The perfect subtrees covering ``[start, end)``, left to right, largest first.

    ``[start, end)`` must be a subtree of the RFC 6962 tree: empty, or starting
    at 0, or starting at a multiple of the smallest power of two >= its size
    (every range :func:`inclusion_proof_ranges` and
    :func:`consistency_proof_ranges` return is one). Its MTH is then
    :func:`root_from_cover` of the cover's hashes. ``perfect_cover(0, size)``
    is the layout of :attr:`CompactRange.hashes`.
    """
    size = end - start
    if start < 0 or size < 0:
        raise ValueError(f"invalid range [{start}, {end})")
    if size > 0 and start % (1 << (size - 1).bit_length()) != 0:
        raise ValueError(f"range [{start}, {end}) is not a subtree of the Merkle tree")
    cover: list[Range] = []
    while size > 0:
        width = 1 << (size.bit_length() - 1)
        cover.append((start, start + width))
        start += width
        size -= width
    return cover


def root_from_cover(hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes of a :func:`perfect_cover` (left to right) into the range's MTH.

    RFC 6962 splits a range at its largest power of two, so its MTH is
    ``node_hash(h0, node_hash(h1, ... node_hash(h[-2], h[-1])))``.
    """
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


# ---------------------------------------------------------------- proof generation


def _split(size: int) -> int:
    """RFC 6962's k: the largest power of two strictly smaller than ``size`` (>= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_proof_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose subtree hashes form RFC 6962 ``PATH(index, D[0:size])``.

    Ordered as the proof is: from the leaf's sibling up to the child of the
    root. Requires ``0 <= index < size`` (else :class:`ValueError`).
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is out of range for tree size {size}")
    siblings: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:  # Walk down from the root to the leaf.
        mid = lo + _split(hi - lo)
        if index < mid:
            siblings.append((mid, hi))
            hi = mid
        else:
            siblings.append((lo, mid))
            lo = mid
    siblings.reverse()
    return siblings


def consistency_proof_ranges(size1: int, size2: int) -> list[Range]:
    """The ranges whose subtree hashes form RFC 6962 ``PROOF(size1, D[0:size2])``.

    Requires ``0 < size1 <= size2`` (else :class:`ValueError`); equal sizes
    give an empty proof. A proof from the empty tree is meaningless and is
    refused here just as :func:`verify_consistency` refuses it.
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    siblings: list[Range] = []
    lo, hi = 0, size2
    known = True  # RFC 6962's b: [lo, hi) is the old tree itself, so the verifier has it.
    while hi != size1:  # Walk down until the node ends exactly where the old tree does.
        mid = lo + _split(hi - lo)
        if size1 <= mid:
            siblings.append((mid, hi))
            hi = mid
        else:
            siblings.append((lo, mid))
            lo = mid
            known = False
    if not known:
        siblings.append((lo, hi))
    siblings.reverse()
    return siblings


def proof_from_ranges(
    ranges: Iterable[Range], subtree_hash: Callable[[int, int], bytes]
) -> list[bytes]:
    """Turn proof ranges into the proof: ``subtree_hash(start, end)`` for each, in order.

    ``subtree_hash`` is storage's lookup (cached for :func:`is_perfect` ranges,
    computed otherwise). A returned hash that is not 32 bytes is a storage bug:
    :class:`ValueError`.
    """
    proof: list[bytes] = []
    for start, end in ranges:
        value = subtree_hash(start, end)
        if len(value) != HASH_SIZE:
            raise ValueError(
                f"subtree hash of [{start}, {end}) has {len(value)} bytes, want {HASH_SIZE}"
            )
        proof.append(value)
    return proof


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, size: int | None = None
) -> list[bytes]:
    """RFC 6962 inclusion proof for leaf ``index`` in the tree of the first ``size`` leaves.

    ``size`` defaults to ``len(leaf_hashes)``.
    """
    size = len(leaf_hashes) if size is None else size
    _check_size_available(leaf_hashes, size)
    return proof_from_ranges(
        inclusion_proof_ranges(index, size), lambda s, e: subtree_root(leaf_hashes, s, e)
    )


def consistency_proof(
    leaf_hashes: Sequence[bytes], size1: int, size2: int | None = None
) -> list[bytes]:
    """RFC 6962 consistency proof between the trees of the first ``size1`` and ``size2`` leaves.

    ``size2`` defaults to ``len(leaf_hashes)``.
    """
    size2 = len(leaf_hashes) if size2 is None else size2
    _check_size_available(leaf_hashes, size2)
    return proof_from_ranges(
        consistency_proof_ranges(size1, size2), lambda s, e: subtree_root(leaf_hashes, s, e)
    )


def _check_size_available(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaf hashes given")


# ---------------------------------------------------------------- compact range


class CompactRange:
    """The right frontier of a log: roots of the perfect subtrees covering ``[0, size)``.

    This is the sequencer's whole tree state: appending needs only these
    ``size.bit_count()`` hashes, never an older leaf (amortised O(1) hashes per
    leaf, O(log size) at worst), and :meth:`root` folds them into the tree head.
    Persist it with :meth:`to_bytes` (the hashes concatenated; the size is kept
    alongside, e.g. in the same row) and restore it with :meth:`from_bytes`,
    which raises :class:`ValueError` for malformed data: a corrupt stored tree
    state is a storage fault, not a failed verification.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        """An empty range (size 0)."""
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Restore the range of a tree of ``size`` leaves from its frontier hashes."""
        if size < 0:
            raise ValueError(f"compact range size {size} is negative")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"compact range of size {size} needs {size.bit_count()} hashes, got {len(hashes)}"
            )
        for i, value in enumerate(hashes):
            if len(value) != HASH_SIZE:
                raise ValueError(f"compact range hash {i} has {len(value)} bytes, want {HASH_SIZE}")
        restored = cls()
        restored._size = size
        restored._hashes = [bytes(value) for value in hashes]
        return restored

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> CompactRange:
        """Inverse of :meth:`to_bytes`; :class:`ValueError` if ``data`` does not fit ``size``."""
        if size < 0:
            raise ValueError(f"compact range size {size} is negative")
        if len(data) != HASH_SIZE * size.bit_count():
            raise ValueError(
                f"compact range of size {size} needs {HASH_SIZE * size.bit_count()} bytes, "
                f"got {len(data)}"
            )
        hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return cls.from_hashes(size, hashes)

    def to_bytes(self) -> bytes:
        """The frontier hashes concatenated, left (largest subtree) to right."""
        return b"".join(self._hashes)

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the frontier hashes, one per range of ``perfect_cover(0, size)``."""
        return list(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy (e.g. to try a batch before its transaction commits)."""
        return CompactRange.from_hashes(self._size, self._hashes)

    def append(self, leaf_hash: bytes, visit: NodeVisitor | None = None) -> None:
        """Add one leaf hash; ``visit`` (if given) sees each perfect subtree this completes.

        ``visit(start, end, hash)`` is called for the leaf itself and then for
        every subtree the leaf closes, bottom-up, so storage can cache them.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash has {len(leaf_hash)} bytes, want {HASH_SIZE}")
        value, start, width = bytes(leaf_hash), self._size, 1
        if visit is not None:
            visit(start, start + width, value)
        pending = self._size
        while pending & 1:  # Each trailing one bit is a subtree of equal width to merge with.
            value = node_hash(self._hashes.pop(), value)
            start -= width
            width *= 2
            if visit is not None:
                visit(start, start + width, value)
            pending >>= 1
        self._hashes.append(value)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes], visit: NodeVisitor | None = None) -> None:
        """Append each of ``leaf_hashes`` in order."""
        for value in leaf_hashes:
            self.append(value, visit)

    def root(self) -> bytes:
        """The tree head MTH of the ``size`` leaves."""
        return root_from_cover(self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # Mutable, so unhashable.

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


# ---------------------------------------------------------------- verification


def _check_non_negative(name: str, value: int) -> None:
    if value < 0:
        raise VerificationError(f"{name} {value} is negative")


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{name} has {len(value)} bytes, want {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, value in enumerate(proof):
        if len(value) != HASH_SIZE:  # The message is only built for the hash that fails.
            _check_hash(f"proof hash {i}", value)


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    """Split the proof for ``index`` in a tree of ``size`` leaves into (inner, border) counts.

    ``inner`` hashes lie below the point where the paths to ``index`` and to
    ``size - 1`` diverge (left or right, by the bits of ``index``); the
    ``border`` hashes above it are all left siblings on the tree's right edge.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Hash up from ``seed`` at ``index``; bit i of ``index`` says which side proof[i] is on."""
    for i, sibling in enumerate(proof):
        seed = node_hash(sibling, seed) if (index >> i) & 1 else node_hash(seed, sibling)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Like :func:`_chain_inner` but only with left siblings: the subtree's older version."""
    for i, sibling in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(sibling, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    """Hash up the right border, where every proof hash is a left sibling."""
    for sibling in proof:
        seed = node_hash(sibling, seed)
    return seed


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root a tree of ``size`` leaves must have if ``proof`` puts ``leaf_hash`` at ``index``.

    Raises :class:`VerificationError` if the inputs cannot be a valid proof.
    """
    if index < 0 or size <= index or len(leaf_hash) != HASH_SIZE:
        _check_non_negative("leaf index", index)
        _check_non_negative("tree size", size)
        if index >= size:
            raise VerificationError(f"leaf index {index} is out of range for tree size {size}")
        _check_hash("leaf hash", leaf_hash)
    inner = (index ^ (size - 1)).bit_length()  # _inclusion_shape, inline
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        _check_proof_hashes(proof)  # A malformed hash is reported first.
        raise VerificationError(
            f"inclusion proof has {len(proof)} hashes, want {inner + border} "
            f"for leaf {index} in tree size {size}"
        )
    # _chain_inner over the first ``inner`` hashes, then _chain_border_right over the rest,
    # in one loop: bit i of ``right`` says that proof[i] is a right sibling.
    right = ~index & ((1 << inner) - 1)
    sha256, prefix = hashlib.sha256, _NODE_PREFIX
    result = leaf_hash
    for sibling in proof:
        if len(sibling) != HASH_SIZE:
            _check_proof_hashes(proof)  # Raises, naming the first malformed hash.
        if right & 1:
            result = sha256(prefix + result + sibling).digest()
        else:
            result = sha256(prefix + sibling + result).digest()
        right >>= 1
    return result


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` shows ``leaf_hash`` at ``index`` in the tree of ``size`` with ``root``.

    Returns None; raises :class:`VerificationError` saying what is wrong otherwise.
    """
    if len(root) != HASH_SIZE:
        _check_hash("root", root)
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} in tree size {size} gives root "
            f"{computed.hex()}, want {root.hex()}"
        )


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """The root of the size2 tree, given ``proof`` that it extends the size1 tree with ``root1``.

    Checks ``root1`` against the proof on the way. Requires ``0 < size1 <= size2``;
    for ``size1 == size2`` the proof must be empty and ``root1`` is returned as
    is (its length is not checked, as in the reference vectors). Raises
    :class:`VerificationError` otherwise.
    """
    _check_non_negative("size1", size1)
    _check_non_negative("size2", size2)
    if size1 == 0:
        raise VerificationError("consistency with the empty tree (size1 = 0) proves nothing")
    if size1 > size2:
        raise VerificationError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == size2:
        if proof:
            raise VerificationError(
                f"sizes are equal ({size1}) but the proof has {len(proof)} hashes, want 0"
            )
        return root1
    _check_hash("root1", root1)
    _check_proof_hashes(proof)

    # The proof is root1's rightmost perfect subtree (omitted when size1 is a
    # power of two: then it is root1 itself), followed by the inclusion proof
    # of that subtree in the size2 tree.
    inner, border = _inclusion_shape(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # Trailing zero bits: that subtree's height.
    inner -= shift
    seed_in_proof = size1 != 1 << shift
    want = int(seed_in_proof) + inner + border
    if len(proof) != want:
        raise VerificationError(
            f"consistency proof has {len(proof)} hashes, want {want} "
            f"from size {size1} to size {size2}"
        )
    seed, path = (proof[0], proof[1:]) if seed_in_proof else (root1, proof)
    mask = (size1 - 1) >> shift

    computed1 = _chain_border_right(_chain_inner_right(seed, path[:inner], mask), path[inner:])
    if computed1 != root1:
        raise VerificationError(
            f"consistency proof gives root {computed1.hex()} for size {size1}, "
            f"want root1 {root1.hex()}"
        )
    return _chain_border_right(_chain_inner(seed, path[:inner], mask), path[inner:])


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the tree of ``size1`` with ``root1``.

    Returns None; raises :class:`VerificationError` saying what is wrong
    otherwise, including for ``size1 == 0`` (nothing to prove) and
    ``size1 > size2``. For ``size1 == size2`` the proof must be empty and the
    roots equal.
    """
    if 0 < size1 < size2:
        _check_hash("root2", root2)
    computed = root_from_consistency_proof(size1, size2, proof, root1)
    if size1 == size2 and computed != root2:
        raise VerificationError(f"sizes are equal ({size1}) but root1 and root2 differ")
    if computed != root2:
        raise VerificationError(
            f"consistency proof gives root {computed.hex()} for size {size2}, "
            f"want root2 {root2.hex()}"
        )
