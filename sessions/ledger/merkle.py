"""RFC 6962 / RFC 9162 Merkle tree hashing and proof verification.

Pure functions over SHA-256: the leaf hash is SHA-256(0x00 || data) and the node hash is
SHA-256(0x01 || left || right). Verification follows RFC 9162 sections 2.1.3.2 (inclusion) and
2.1.4.2 (consistency); the proof length is checked first, so a proof with missing or extra
components fails with a `ProofLengthError` naming both lengths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """A proof is rejected: malformed input, impossible sizes, or a root that does not match."""


class ProofLengthError(ProofError):
    """The proof has the wrong number of components for its index and sizes."""

    def __init__(self, got: int, want: int):
        super().__init__(f"wrong proof length: got {got} hashes, want {want}")
        self.got = got
        self.want = want


class RootMismatchError(ProofError):
    """The root recomputed from a proof differs from the expected root."""

    def __init__(self, expected: bytes, calculated: bytes):
        super().__init__(f"root mismatch: expected {expected.hex()}, calculated {calculated.hex()}")
        self.expected = expected
        self.calculated = calculated


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """The root of the empty tree: SHA-256 of the empty string."""
    return hashlib.sha256(b"").digest()


def inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in the inclusion proof of leaf `index`. Requires 0 <= index < size."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(size1: int, size2: int) -> int:
    """Number of hashes in the consistency proof from size1 to size2. Requires 0 < size1 < size2."""
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros: the largest perfect subtree ending at size1
    seed = 0 if size1 == 1 << shift else 1
    return seed + inclusion_proof_length(size1 - 1, size2) - shift


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by `proof` for leaf hash `leaf` at `index`. Requires 0 <= index < size."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes([leaf], "leaf hash")
    _check_hashes(proof, "proof hash")
    want = inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofLengthError(len(proof), want)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("proof continues past the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("proof ends below the root")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf hash `leaf` sits at `index` of the tree with `root`. Requires 0 <= index < size."""
    calculated = root_from_inclusion_proof(leaf, index, size, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1). Requires 0 < size1 <= size2.

    Equal sizes need an empty proof and equal roots. A consistency check from size 0 is refused:
    every tree extends the empty tree, so such a proof would prove nothing (RFC 9162 defines the
    proof for 0 < size1 < size2).
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"consistency needs 0 < size1 <= size2, got size1={size1} size2={size2}")
    if size1 == size2:
        if proof:
            raise ProofLengthError(len(proof), 0)
        if root1 != root2:
            raise RootMismatchError(root1, root2)
        return
    _check_hashes(proof, "proof hash")
    want = consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofLengthError(len(proof), want)
    calculated1, calculated2 = _roots_from_consistency_proof(size1, size2, proof, root1)
    if calculated1 != root1:
        raise RootMismatchError(root1, calculated1)
    if calculated2 != root2:
        raise RootMismatchError(root2, calculated2)


def _roots_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """RFC 9162 2.1.4.2 steps 2-6: (root of size1, root of size2). Requires a length-checked proof."""
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof continues past the root")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("proof ends below the root")
    return fr, sr


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    """Reject any hash that is not HASH_SIZE bytes. Requires a sequence of bytes."""
    for position, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what} {position} has {len(h)} bytes, want {HASH_SIZE}")
