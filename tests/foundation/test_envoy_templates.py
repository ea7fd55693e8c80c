"""Envoy's configuration is the YAML in envoy/ (issue 14): the renderer's substitution rules, the
templates found from a checkout and shipped in a wheel, and `nx envoy render` printing what the
platform runs. (Every test that starts a platform drives the rendered files through a real Envoy.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest
import yaml  # type: ignore[import-untyped]

from control_plane import envoy_templates
from control_plane.envoy_config import render_bootstrap
from control_plane.envoy_templates import OMIT, TemplateError, render, templates_dir
from core.settings import load_settings
from tests.harness import ROOT


@pytest.fixture
def template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "bootstrap.yaml").write_text("{}\n")
    monkeypatch.setattr(envoy_templates, "templates_dir", lambda: tmp_path)
    return tmp_path / "t.yaml"


def test_values_fill_the_parsed_tree(template: Path) -> None:
    template.write_text(
        "port: ${port}\nname: cluster_${id}\nflow: {a: \"${port}\", b: [\"${list}\"]}\n"
        "items:\n  - first\n  - ${list}\n  - ${one}\ntls: ${tls}\n")
    out = render("t.yaml", {"port": 8080, "id": "x", "list": [1, 2], "one": {"k": "v"}, "tls": OMIT})
    assert out == {"port": 8080, "name": "cluster_x", "flow": {"a": 8080, "b": [1, 2]},
                   "items": ["first", 1, 2, {"k": "v"}]}


def test_a_value_never_changes_the_documents_shape(template: Path) -> None:
    template.write_text("host: ${host}\nurl: http://${host}/\n")
    hostile = "evil\nadmin: {address: 0.0.0.0}\n"
    assert render("t.yaml", {"host": hostile}) == {"host": hostile, "url": f"http://{hostile}/"}


def test_an_unknown_name_stops_the_render(template: Path) -> None:
    template.write_text("a: ${nope}\n")
    with pytest.raises(TemplateError, match=r"t.yaml: no value for \$\{nope\}"):
        render("t.yaml", {})
    template.write_text("a: x${m}\n")
    with pytest.raises(TemplateError, match="must be text or a number"):
        render("t.yaml", {"m": {"k": 1}})


def test_templates_found_in_the_checkout_and_shipped_in_the_wheel() -> None:
    assert templates_dir() == ROOT / "envoy"
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    patterns = shipped["share/nx-platform/envoy"]
    files = sorted(p.relative_to(ROOT) for p in (ROOT / "envoy").iterdir())
    assert files and all(any(f.match(pat) for pat in patterns) for f in files), (files, patterns)
    assert "envoy" not in " ".join((ROOT / ".dockerignore").read_text().split())  # the image has them


def test_nx_envoy_render_prints_what_nx_up_writes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k not in ("DATABASE_URL",)}
    env.update({"NX_DATA_DIR": str(tmp_path / "data"), "NX_CATALOG_PATH": str(ROOT / "config" / "catalog.toml")})
    nx = [sys.executable, "-m", "control_plane.cli", "envoy", "render"]
    out = subprocess.run([*nx, "--part", "bootstrap", "--json"], env=env, cwd=tmp_path, capture_output=True,
                         check=True, timeout=60)
    assert msgspec.json.decode(out.stdout) == render_bootstrap(load_settings(env))
    out = subprocess.run(nx, env=env, cwd=tmp_path, capture_output=True, check=True, timeout=60)
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d.get("node", {}).get("id") for d in docs[:1]] == ["nx-edge"] and len(docs) == 3
    assert {c["name"] for c in docs[1]["resources"]} >= {"backend_local"}  # from the catalog: no database yet
    assert docs[2]["resources"][0]["name"] == "edge_routes"
    assert b"from the catalog" in out.stderr and not (tmp_path / "data" / "nx.db").exists()
