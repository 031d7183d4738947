"""The per-room Merkle log: append leaf hashes, then prove roots, inclusion and consistency at any size.

Storage model. Node (level, index) is the root of the perfect subtree over leaves
[index * 2**level, (index + 1) * 2**level); level 0 holds the leaf hashes. The log stores every such node
once its subtree is complete, so a tree of n leaves stores 2n - popcount(n) hashes.

Any subtree that RFC 6962 hashes for a tree of size m is either one stored node or the right border of
that tree, which decomposes into at most log2(m) stored nodes (one per set bit of its width). So the root,
an inclusion proof and a consistency proof at ANY past size cost O(log n) node reads, without a rebuild.

Appending keeps a compact range: the roots of the perfect subtrees that make up the current tree, largest
first. A new leaf merges with the equal-sized subtrees at the right end, storing each completed node:
O(1) amortised, O(log n) worst case, and the log never reads its store to append.
"""

from __future__ import annotations

from typing import Protocol

from sessions.ledger.merkle import HASH_SIZE, empty_root, leaf_hash, node_hash


class LedgerError(Exception):
    """Base class for errors of the Merkle log."""


class SizeError(LedgerError, ValueError):
    """A requested size or index lies outside what the log holds."""

    def __init__(self, problem: str, requested: int, size: int):
        super().__init__(f"{problem}: requested {requested}, log size {size}")
        self.requested = requested
        self.size = size


class MissingNodeError(LedgerError, LookupError):
    """The store lacks a node the log needs: the store is incomplete or corrupt."""

    def __init__(self, level: int, index: int):
        super().__init__(f"node (level {level}, index {index}) is missing from the store")
        self.level = level
        self.index = index


class NodeStore(Protocol):
    """Where a log keeps its node hashes. Nodes are written once, in index order within each level."""

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node (level, index), or None if absent."""
        ...

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Store the hash of node (level, index). Requires the node to be new."""
        ...

    def leaf_count(self) -> int:
        """How many leaf hashes (level-0 nodes) are stored."""
        ...


class MemoryNodeStore:
    """A NodeStore in lists, one per level. For tests, benchmarks and short-lived logs."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node (level, index), or None. Requires level, index >= 0."""
        if level < len(self._levels) and index < len(self._levels[level]):
            return self._levels[level][index]
        return None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Store node (level, index). Requires index == number of nodes already at that level."""
        while len(self._levels) <= level:
            self._levels.append([])
        nodes = self._levels[level]
        if index != len(nodes):
            raise LedgerError(f"node (level {level}, index {index}) written out of order (have {len(nodes)})")
        nodes.append(hash_)

    def leaf_count(self) -> int:
        """How many leaf hashes are stored."""
        return len(self._levels[0]) if self._levels else 0


class MerkleLog:
    """An append-only RFC 6962 log over a NodeStore. Reopening on a filled store resumes at its size."""

    def __init__(self, store: NodeStore):
        self._store = store
        self._size = store.leaf_count()
        # The compact range: (level, hash) of the perfect subtrees covering [0, size), largest first.
        self._range = [(level, self._node(level, index)) for level, index in _perfect_subtrees(0, self._size)]

    @property
    def size(self) -> int:
        """Number of leaves in the log."""
        return self._size

    def append(self, leaf: bytes) -> int:
        """Append one leaf hash; return its index. Requires a 32-byte hash (see merkle.leaf_hash).

        If the store raises, the log is unchanged (roll back the store's transaction before retrying).
        """
        if len(leaf) != HASH_SIZE:
            raise LedgerError(f"leaf hash has {len(leaf)} bytes, want {HASH_SIZE}")
        index, compact = self._size, self._range
        nodes, level, hash_, keep = [(0, index, leaf)], 0, leaf, len(compact)
        while keep and compact[keep - 1][0] == level:  # merge equal-sized subtrees at the right end
            keep, level = keep - 1, level + 1
            hash_ = node_hash(compact[keep][1], hash_)
            nodes.append((level, index >> level, hash_))
        put = self._store.put
        for node in nodes:
            put(*node)
        del compact[keep:]
        compact.append((level, hash_))
        self._size = index + 1
        return index

    def append_data(self, data: bytes) -> int:
        """Append the leaf hash of `data` (e.g. canonical.encode_event(event)); return its index."""
        return self.append(leaf_hash(data))

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`. Requires 0 <= index < size."""
        self._check_index(index, self._size)
        return self._node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """The tree root at `size` (default: the current size). Requires 0 <= size <= self.size."""
        if size is None or size == self._size:
            return _fold([hash_ for _, hash_ in self._range])
        self._check_size(size)
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `size`. Requires 0 <= index < size."""
        size = self._size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        path, begin, end = [], 0, size
        while end - begin > 1:
            split = begin + _largest_power_of_two_below(end - begin)
            if index < split:
                path.append(self._range_hash(split, end))
                end = split
            else:
                path.append(self._range_hash(begin, split))
                begin = split
        return path[::-1]

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from size1 to size2. Requires 0 < size1 <= size2 <= self.size."""
        size2 = self._size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise SizeError("consistency needs 0 < size1 <= size2", size1, size2)
        path, begin, end, whole_old_tree = [], 0, size2, True
        while end != size1:
            split = begin + _largest_power_of_two_below(end - begin)
            if size1 <= split:
                path.append(self._range_hash(split, end))
                end = split
            else:
                path.append(self._range_hash(begin, split))
                begin, whole_old_tree = split, False
        if not whole_old_tree:
            path.append(self._range_hash(begin, end))
        return path[::-1]

    def _range_hash(self, begin: int, end: int) -> bytes:
        """RFC 6962 hash of leaves [begin, end). Requires a subtree of the RFC split (begin aligned)."""
        return _fold([self._node(level, index) for level, index in _perfect_subtrees(begin, end)])

    def _node(self, level: int, index: int) -> bytes:
        """A stored node hash. Requires the node to be complete."""
        hash_ = self._store.get(level, index)
        if hash_ is None:
            raise MissingNodeError(level, index)
        return hash_

    def _check_size(self, size: int) -> None:
        """Refuse a size the log has not reached. Requires an int."""
        if not 0 <= size <= self._size:
            raise SizeError("tree size out of range", size, self._size)

    def _check_index(self, index: int, size: int) -> None:
        """Refuse a leaf index outside a tree of `size`. Requires an int."""
        if not 0 <= index < size:
            raise SizeError(f"leaf index outside a tree of size {size}", index, self._size)


def _perfect_subtrees(begin: int, end: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees covering [begin, end), largest first.

    Requires begin to be a multiple of the largest power of two <= end - begin (true for every subtree
    of the RFC 6962 split, and for begin == 0).
    """
    nodes, width = [], end - begin
    while width:
        level = width.bit_length() - 1
        nodes.append((level, begin >> level))
        begin, width = begin + (1 << level), width - (1 << level)
    return nodes


def _fold(hashes: list[bytes]) -> bytes:
    """Hash perfect-subtree roots, largest first, into one root, right to left."""
    if not hashes:
        return empty_root()
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than n. Requires n > 1."""
    return 1 << ((n - 1).bit_length() - 1)
