"""Hold real answers to the published OpenAPI document: `Contract.check(method, template, response)`
validates the body against the schema documented for that operation, status and content type
(JSON Schema 2020-12, `$ref`s resolved inside the document) and records the operation as seen."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]

__all__ = ["Contract"]


class Contract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.seen: set[str] = set()

    def operations(self) -> set[str]:
        return {f"{m.upper()} {path}" for path, item in self.doc["paths"].items() for m in item
                if m in ("get", "put", "post", "delete", "patch")}

    def check(self, method: str, template: str, r: httpx.Response) -> None:
        op = self.doc["paths"][template][method.lower()]
        documented = op["responses"].get(str(r.status_code))
        assert documented is not None, f"{method} {template} answered {r.status_code}, not documented: {r.text}"
        ctype = r.headers.get("content-type", "").split(";")[0].strip()
        content = documented.get("content", {})
        assert ctype in content, f"{method} {template} {r.status_code}: {ctype!r} not among {sorted(content)}"
        if ctype == "application/json":
            schema = {**content[ctype]["schema"], "components": self.doc["components"]}
            validator = jsonschema.Draft202012Validator(schema)
            try:
                body = r.json()
            except ValueError:
                raise AssertionError(f"{method} {template} {r.status_code}: not JSON: {r.text[:300]!r}") from None
            errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
            assert not errors, f"{method} {template} {r.status_code}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors[:5])
        self.seen.add(f"{method.upper()} {template}")
