"""The tree keeps its dependency rules: imports point inward.

- `reconstruction/` and `sessions/` are pure libraries: they never import `server`, aiohttp or socket.io;
- `sessions/` does not import `reconstruction/`, and `reconstruction/` does not import `sessions/`;
- `sessions/ledger/` never imports a room module (only itself and the standard library or its own deps);
- in `server/`, arrows point from the API to the services and the stores, never back (the middleware may
  use the API's error vocabulary), and the stores import no service.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("reconstruction", "sessions", "server")


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def rule_breaks(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in files:
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("reconstruction", ("server", "sessions", "aiohttp", "socketio", "engineio")),
    ("sessions", ("server", "reconstruction", "aiohttp", "socketio", "engineio")),
])
def test_the_pure_libraries_import_no_server_and_no_web_code(package, forbidden):
    assert rule_breaks(modules(package), forbidden) == []


def test_the_ledger_never_imports_a_room_module():
    rooms = tuple(f"sessions.{path.stem}" for path in (REPO / "sessions").glob("*.py") if path.stem != "__init__")
    assert rule_breaks(modules("sessions/ledger"), (*rooms, "sessions.ledger.__init__")) == []


@pytest.mark.parametrize("layer", ["middleware", "services", "storage"])
def test_inner_server_layers_never_import_the_api_handlers(layer):
    allowed = "server.api.errors"  # the error vocabulary the middleware renders
    breaks = [b for b in rule_breaks(modules(f"server/{layer}"), ("server.api",))
              if not b.split()[-1].startswith(allowed)]
    assert breaks == []


def test_storage_imports_no_service():
    assert rule_breaks(modules("server/storage"), ("server.services", "server.middleware")) == []
