"""Settings and catalog validation: a bad value stops start-up with a message naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.domain.catalog import CatalogError, load_catalog
from control_plane.supervisor import prepare
from core.settings import SettingsError, load_settings
from tests.harness import ROOT

GOOD = (ROOT / "config" / "catalog.toml").read_text()


@pytest.mark.parametrize(("env", "named"), [
    ({"NX_EDGE_PORT": "abc"}, "NX_EDGE_PORT"),
    ({"NX_EDGE_PORT": "70000"}, "NX_EDGE_PORT"),
    ({"NX_XFF_TRUSTED_HOPS": "-1"}, "NX_XFF_TRUSTED_HOPS"),
    ({"NX_MAX_BODY_BYTES": "10"}, "NX_MAX_BODY_BYTES"),
    ({"NX_LOG_LEVEL": "loud"}, "NX_LOG_LEVEL"),
    ({"NX_LOCAL_MODELS_ENABLED": "perhaps"}, "NX_LOCAL_MODELS_ENABLED"),
    ({"DATABASE_URL": "mysql://db/nx"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://u@h/db", "NX_DATABASE_URL": "oracle://x"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL"),
    ({"NX_TRUSTED_PROXIES": "127.0.0.0/8,envoy"}, "NX_TRUSTED_PROXIES"),
])
def test_bad_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_defaults_and_env_conversion() -> None:
    s = load_settings({})
    assert s.edge_port == 8080 and s.is_sqlite and s.xff_trusted_hops == 0
    s = load_settings({"NX_EDGE_PORT": "8181", "NX_LOCAL_MODELS_ENABLED": "false",
                       "DATABASE_URL": "postgres://u:p@db:5432/nx"})
    assert s.edge_port == 8181 and s.local_models_enabled is False
    assert s.effective_database_url == "postgresql+asyncpg://u:p@db:5432/nx"


def test_config_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "nx.toml"
    f.write_text("edge_port = 9999\n")
    assert load_settings({"NX_CONFIG_FILE": str(f)}).edge_port == 9999
    assert load_settings({"NX_CONFIG_FILE": str(f), "NX_EDGE_PORT": "9998"}).edge_port == 9998
    f.write_text("edge_prot = 1\n")
    with pytest.raises(SettingsError, match="edge_prot"):
        load_settings({"NX_CONFIG_FILE": str(f)})
    with pytest.raises(SettingsError, match="NX_CONFIG_FILE"):
        load_settings({"NX_CONFIG_FILE": str(tmp_path / "missing.toml")})


def test_service_entry_points_name_the_bad_setting() -> None:
    env = {**os.environ, "NX_EDGE_PORT": "abc", "PYTHONPATH": str(ROOT)}
    for module in ("control_plane.serve", "proxy_plugins.sidecar.server", "control_plane.worker"):
        r = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True,
                           timeout=60,
                           check=False)
        assert r.returncode != 0 and "NX_EDGE_PORT" in r.stderr, (module, r.stderr[-500:])


BAD_CATALOGS = [
    (GOOD.replace('protocol = "openai_chat"', 'protocol = "grpc"'), "protocol"),
    (re.sub(r"context_window = \d+\n", "", GOOD, count=1), "context_window"),
    (re.sub(r" output_nanos_per_mtok = [\d_]+,", "", GOOD, count=1), "output_nanos_per_mtok"),
    (re.sub(r"\binput_nanos_per_mtok = [\d_]+", "input_nanos_per_mtok = -1", GOOD, count=1),
     "input_nanos_per_mtok"),
    (GOOD.replace('backend = "local"', 'backend = "nowhere"', 1), "models[0].backend"),
    (GOOD.replace('base_url = "http://127.0.0.1:{local_models_port}/v1"', 'base_url = "file:///etc/passwd"'),
     "base_url"),
    (GOOD.replace('id = "local/gemma-3-270m"', 'id = "Not A Model Id"'), "id"),
    (GOOD.replace('kind = "text"', 'kind = "image"'), "kind"),
    (GOOD.replace('aliases = ["orion-reason"]', 'aliases = ["orion-reason", "orion-reason"]'),
     "orion-reason"),
    (GOOD + "\n[[modles]]\nid = 'x'\n", "modles"),
    ("backends = [", "catalog"),
]


@pytest.mark.parametrize(("text", "field"), BAD_CATALOGS)
def test_bad_catalog_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    assert text != GOOD
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_catalog(path, load_settings({}))


async def test_bad_catalog_stops_prepare_before_any_change(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(GOOD.replace('kind = "text"', 'kind = "image"'))
    settings = load_settings({"NX_DATA_DIR": str(tmp_path / "data"), "NX_CATALOG_PATH": str(path)})
    with pytest.raises(CatalogError, match="kind"):
        await prepare(settings)
    assert not (tmp_path / "data" / "nx.db").exists()
    assert not (tmp_path / "data" / "envoy").exists()


def test_nx_init_reports_bad_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(GOOD.replace('protocol = "openai_chat"', 'protocol = "grpc"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k != "DATABASE_URL"}
    env |= {"NX_DATA_DIR": str(tmp_path / "data"), "NX_CATALOG_PATH": str(path), "PYTHONPATH": str(ROOT)}
    nx = str(Path(sys.executable).parent / "nx")
    r = subprocess.run([nx, "init"], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert "protocol" in r.stderr and str(path) in r.stderr
