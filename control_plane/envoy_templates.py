"""Fills the YAML templates of the top-level `envoy/` directory (see envoy/README.md).

Substitution happens after the YAML is parsed, on the tree: a value is never re-read as YAML, so no
setting or database value can add keys or change the document's shape. The rules:

- a scalar that is exactly `${name}` becomes the value itself (a number, a mapping, a list);
- `${name}` inside a longer string is replaced by the value's text (strings and numbers only);
- in a list, an item `${name}` whose value is a list is spliced in;
- a mapping entry whose value is `OMIT` is left out (an optional block such as TLS);
- a name with no value is an error, so a typo in a template stops the render.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

__all__ = ["OMIT", "TemplateError", "render", "templates_dir"]

_NAME = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()


class TemplateError(Exception):
    """A template names a value the renderer does not have, or cannot be found or parsed."""


def templates_dir() -> Path:
    """The `envoy/` directory: beside the packages in a checkout or an editable install (`./nx up`,
    the Dockerfile's `pip install -e .`); under `<prefix>/share/nx-platform/envoy` from a wheel
    (pyproject's data-files)."""
    candidates = [Path(__file__).resolve().parents[1] / "envoy", Path(sys.prefix) / "share" / "nx-platform" / "envoy"]
    for path in candidates:
        if (path / "bootstrap.yaml").is_file():
            return path
    raise TemplateError("Envoy templates not found in " + " or ".join(str(c) for c in candidates))


def render(name: str, values: dict[str, Any]) -> Any:
    """The template `envoy/<name>` with `values` filled in."""
    path = templates_dir() / name
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"envoy/{name}: {exc}") from exc
    return _fill(tree, values, name)


def _lookup(key: str, values: dict[str, Any], where: str) -> Any:
    if key not in values:
        raise TemplateError(f"envoy/{where}: no value for ${{{key}}}")
    return values[key]


def _fill(node: Any, values: dict[str, Any], where: str) -> Any:
    if isinstance(node, dict):
        out = {k: _fill(v, values, where) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not OMIT}
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            whole = isinstance(item, str) and _NAME.fullmatch(item)
            filled = _fill(item, values, where)
            if whole and isinstance(filled, list):
                items.extend(filled)
            elif filled is not OMIT:
                items.append(filled)
        return items
    if isinstance(node, str):
        if m := _NAME.fullmatch(node):
            return _lookup(m.group(1), values, where)

        def text(m: re.Match[str]) -> str:
            value = _lookup(m.group(1), values, where)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TemplateError(f"envoy/{where}: ${{{m.group(1)}}} inside a string must be text or a number")
            return str(value)

        return _NAME.sub(text, node)
    return node
