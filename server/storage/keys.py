"""The server's secrets in the data folder: URL-safe tokens (admin token, invite, pseudonym and PACS-ref keys)
and the ledger's Ed25519 signing key. Each is created on first start, 0600, and never overwritten.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.storage.files import atomic_write
from sessions.ledger.note import generate_signing_key, private_key_from_pem, private_key_to_pem

ADMIN_TOKEN_FILE = "admin-token"
SIGNING_KEY_FILE = "ledger-key.pem"


def load_or_create_secret(path: Path, nbytes: int = 32) -> tuple[str, bool]:
    """The URL-safe secret in `path`, created 0600 if absent: (secret, created)."""
    created = False
    if not path.exists():
        created = atomic_write(path, (secrets.token_urlsafe(nbytes) + "\n").encode(), exclusive=True)
    _private(path)
    return path.read_text().strip(), created


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in `path` (PKCS#8 PEM), created 0600 if absent."""
    if not path.exists():
        key = generate_signing_key()
        if atomic_write(path, private_key_to_pem(key), exclusive=True):
            return key
    _private(path)
    return private_key_from_pem(path.read_bytes())


def _private(path: Path) -> None:
    """Make `path` readable by its owner only, if it is not already."""
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
