"""sessions.ledger.merkle against every RFC 6962 vector in ../shared/testvectors/rfc6962 (one test per file).

The rule (README.md there): accept exactly the files with "wantErr": false, reject every other one.
A rejection is a ProofError; any other exception is a bug, not a rejection.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import VECTORS, require_path

from sessions.ledger import merkle

RFC6962 = VECTORS / "rfc6962"
FILES = sorted(RFC6962.glob("*/**/*.json"))


def _id(path: Path) -> str:
    return str(path.relative_to(RFC6962)) if path != RFC6962 else "rfc6962-missing"


def _hashes(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(value) for value in values or []]


def _verify(vector: dict) -> None:
    b64 = base64.b64decode
    if "leafIdx" in vector:
        merkle.verify_inclusion(
            b64(vector["leafHash"]),
            vector["leafIdx"],
            vector["treeSize"],
            _hashes(vector["proof"]),
            b64(vector["root"]),
        )
    else:
        merkle.verify_consistency(
            vector["size1"],
            vector["size2"],
            _hashes(vector["proof"]),
            b64(vector["root1"]),
            b64(vector["root2"]),
        )


@pytest.mark.parametrize("path", FILES or [RFC6962], ids=_id)
def test_vector(path: Path) -> None:
    require_path(RFC6962 / "README.md", "../shared/testvectors/rfc6962")
    vector = json.loads(path.read_text())
    if vector["wantErr"]:
        with pytest.raises(merkle.ProofError):
            _verify(vector)
    else:
        _verify(vector)


def test_every_vector_folder_is_collected() -> None:
    require_path(RFC6962 / "README.md", "../shared/testvectors/rfc6962")
    folders = {str(path.parent.relative_to(RFC6962)) for path in FILES}
    assert {
        "inclusion/1",
        "inclusion/single-entry",
        "inclusion/additional/0",
        "consistency/additional",
    } <= folders
    assert len(FILES) == len(list(RFC6962.rglob("*.json")))
    assert sum(not json.loads(path.read_text())["wantErr"] for path in FILES) >= 10


def test_root_mismatch_carries_both_roots() -> None:
    leaf = merkle.leaf_hash(b"a")
    wrong = merkle.leaf_hash(b"b")
    with pytest.raises(merkle.RootMismatchError) as caught:
        merkle.verify_inclusion(leaf, 0, 1, [], wrong)
    assert (caught.value.expected, caught.value.calculated) == (wrong, leaf)


def test_proof_length_error_carries_both_lengths() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(5)]
    with pytest.raises(merkle.ProofLengthError) as caught:
        merkle.verify_inclusion(leaves[0], 0, 5, leaves[:2], merkle.empty_root())
    assert (caught.value.got, caught.value.want) == (2, 3)


@pytest.mark.parametrize(
    ("size1", "size2", "want"), [(1, 2, 1), (1, 8, 3), (2, 5, 2), (3, 7, 4), (4, 8, 1), (6, 8, 3), (7, 8, 4)]
)
def test_consistency_proof_length(size1: int, size2: int, want: int) -> None:
    assert merkle.consistency_proof_length(size1, size2) == want
