"""The ledger: RFC 6962 Merkle trees, signed checkpoints, anchors and export bundles.

It never imports a room module: a room's events reach it as canonical leaf bytes (see canonical.py and
docs/ledger.md). Modules:

- canonical.py     the canonical JSON encoding of an event (the leaf bytes)
- merkle.py        RFC 6962 hashing and proof verification
- tree.py          the append-only Merkle log over a node store (roots and proofs at any size)
- legacy_store.py  the earlier node layout, read only to migrate it
- note.py          checkpoints as C2SP signed notes, Ed25519 keys and verifiers
- policy.py        when a checkpoint is cut, and the cut itself
- anchors.py       anchor backends and the embedded local anchor chain
- bundle.py        the export bundle: its format, writing and reading
- bundle_tree.py   the streaming tree builder that checks a bundle's events
- verify.py        `verify_bundle`: the offline check of a bundle
"""
