"""The tests stand on their own: everything they read is inside the repository."""

from __future__ import annotations

import re

from tests.compat.openapi_schema import SPEC_PATH, validate
from tests.harness import ROOT

# A read of something outside the repository: the team's shared folder, or an absolute path under a
# home or work directory (a clone elsewhere has neither).
OUTSIDE = re.compile(r"""["'](?:/work/|/home/|/root/|(?:\.\./)+shared/)|\.parent\s*/\s*["']shared""")
FOLDERS = ("tests", "bench", "scripts", "control_plane", "proxy_plugins", "local_models", "nx_client", "config")


def test_no_file_reads_outside_the_repository() -> None:
    found = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            # Installed peers (bench/.venvs, bench/.peers: the peers and failover lanes) are not ours.
            if path.suffix not in (".py", ".sh", ".toml", ".mjs", ".js") or "node_modules" in path.parts \
                    or ".venvs" in path.parts:
                continue
            if path == ROOT / "tests" / "house" / "test_self_contained.py":
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_openai_document_is_in_the_repository() -> None:
    assert SPEC_PATH.is_relative_to(ROOT / "tests" / "data") and SPEC_PATH.is_file()
    assert "openai-openapi.yaml" in (ROOT / "tests" / "data" / "README.md").read_text()
    validate({"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "o"}]},
             "ListModelsResponse")
