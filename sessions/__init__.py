"""Rooms, protocol ops, the ordered event log, the Merkle ledger, checkpoints and anchors.

A pure library: no web code, no I/O policy. See DESIGN.md and docs/ledger.md.
"""
