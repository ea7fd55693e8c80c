"""Rows are read by name (issue 14): no product module reads a second or later column of a result
row by position (`r[3]`, `row[14]`). A one-column result read as `row[0]` is its value; a row of two
or more columns is read into a Struct by name (`core.rows.row_as`) or by attribute (`row.name`)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("core", "control_plane", "proxy_plugins", "local_models")
ROW_NAMES = {"r", "row", "rec", "record_row"}


def _positional_reads(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ROW_NAMES
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int)
                and node.slice.value >= 1):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}[{node.slice.value}]")
    return found


def test_no_row_is_read_by_position() -> None:
    offenders = [hit for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 for hit in _positional_reads(path)]
    assert not offenders, "rows read by position:\n" + "\n".join(offenders)


def test_the_check_finds_a_positional_read(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(r):\n    return r[0], r[2]\n")
    hits = [h.split(": ", 1)[1] for h in _positional_reads_at(sample)]
    assert hits == ["r[2]"]


def _positional_reads_at(path: pathlib.Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return _positional_reads(path)
    finally:
        ROOT = saved
