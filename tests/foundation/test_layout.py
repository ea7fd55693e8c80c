"""The tree shows the processes over one shared core (docs/architecture.md, "Code map").

Read from the code's own imports (ast, every import at any depth, `TYPE_CHECKING` included):
`core` imports no process's package, and no process's package imports another's. A new module
that breaks the rule fails here, naming the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the first-party packages it may import (besides itself)
# (`nx_client` is the customers' library: the sidecar verifies signatures with its canonical form.)
ALLOWED: dict[str, set[str]] = {
    "core": {"nx_client"},
    "proxy_plugins.sidecar": {"core", "nx_client"},
    "proxy_plugins.adapter": {"core", "nx_client"},
    "control_plane": {"core", "nx_client"},
    "local_models": set(),
    "nx_client": set(),
}
FIRST_PARTY = ("core", "proxy_plugins", "control_plane", "local_models", "nx_client")


def _package_of(module: str) -> str | None:
    for pkg in sorted(ALLOWED, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from proxy_plugins import adapter` names a package through its parent
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _violations(root: Path = ROOT) -> list[str]:
    bad: dict[str, None] = {}
    for top in FIRST_PARTY:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            own = _package_of(".".join(rel.with_suffix("").parts))
            if own is None:  # proxy_plugins/__init__.py: a face, imports nothing
                continue
            for line, module in _imports(path):
                if not module.startswith(FIRST_PARTY):
                    continue
                target = _package_of(module)
                if target is None or target == own or target in ALLOWED[own]:
                    continue
                allowed = sorted(ALLOWED[own]) or "itself"
                bad[f"{rel}:{line} imports {target} ({own} may import only {allowed})"] = None
    return list(bad)


def test_no_import_runs_upwards_or_across() -> None:
    assert _violations() == []


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """The check is not vacuous: an import from the core up into a process is found."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "probe.py").write_text("import os\nfrom proxy_plugins.adapter import commit\n")
    (tmp_path / "proxy_plugins" / "sidecar").mkdir(parents=True)
    (tmp_path / "proxy_plugins" / "sidecar" / "x.py").write_text("from proxy_plugins import adapter\n")
    found = _violations(tmp_path)
    assert [v.split(" ")[0] for v in found] == ["core/probe.py:2", "proxy_plugins/sidecar/x.py:1"]
