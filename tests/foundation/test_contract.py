"""The contract between Envoy, the sidecar, the adapter and the control plane lives in
core/contract.py (issue 14): no `x-nx-*` header name is spelled anywhere else in the code or in
Envoy's templates, so renaming one there renames it everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from core.contract import Header, Route
from local_models.generation import TENANT_HEADER
from tests.harness import ROOT

NAME = re.compile(r"^x-nx(sig)?-[a-z-]*$")
PACKAGES = ("core", "control_plane", "proxy_plugins", "nx_client", "local_models")
# The customers' library owns what a client sends; the local model server imports nothing of ours.
ALLOWED = {Path("core/contract.py"): None, Path("nx_client/signing.py"): {"x-nx-timestamp", "x-nx-nonce",
                                                                          "x-nx-signature"},
           Path("local_models/generation.py"): {"x-nx-tenant"}}


def _literals(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if NAME.match(text):
                found.add(text)
    return found


def test_header_names_only_in_the_contract() -> None:
    stray = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT)
            names = _literals(path)
            if rel in ALLOWED:
                allowed = ALLOWED[rel]
                names = set() if allowed is None else names - allowed
            if names:
                stray[str(rel)] = sorted(names)
    assert not stray, f"x-nx-* header names outside core/contract.py: {stray}"
    assert TENANT_HEADER == Header.TENANT


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [*_strings(k), *_strings(v)]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def test_templates_name_the_contract() -> None:
    for path in (ROOT / "envoy").glob("*.yaml"):
        strings = _strings(yaml.safe_load(path.read_text()))  # comments are free to explain
        assert not [s for s in strings if "x-nx" in s], path.name
    used = " ".join((ROOT / "envoy" / name).read_text() for name in ("routes.yaml", "backend-route.yaml"))
    for value in ("${header.route}", "${route.adapter}", "${route.control_plane}", "${route.backend_prefix}"):
        assert value in used, value
    assert Route.BACKEND_PREFIX.endswith(".")
