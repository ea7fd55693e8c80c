"""The ledger speaks money, not HTTP (issue 14): its refusals are its own exceptions, each naming a
code of the one error table, and no ledger module imports the HTTP-shaped `ApiError`."""

from __future__ import annotations

import ast
import pathlib

from core.errors import ERRORS, refusal
from core.ledger import errors as ledger_errors

LEDGER = pathlib.Path(__file__).resolve().parents[2] / "core" / "ledger"


def _refusals() -> list[type[ledger_errors.LedgerError]]:
    found = [getattr(ledger_errors, name) for name in ledger_errors.__all__]
    return [c for c in found if c is not ledger_errors.LedgerError]


def test_every_refusal_names_a_code_of_the_table() -> None:
    refusals = _refusals()
    assert len(refusals) >= 9
    for cls in refusals:
        assert cls.code in ERRORS, cls
        rendered = refusal(cls("why", param="p"))
        assert (rendered.code, rendered.message, rendered.param) == (cls.code, "why", "p")
        assert rendered.status == ERRORS[cls.code].status
    assert refusal(ledger_errors.InsufficientFunds("no")).status == 402
    assert refusal(ledger_errors.HoldResolved("done")).status == 409


def test_no_ledger_module_imports_the_http_error() -> None:
    for path in sorted(LEDGER.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "core.errors":
                raise AssertionError(f"{path.name} imports core.errors: {[a.name for a in node.names]}")
            if isinstance(node, ast.Name) and node.id == "ApiError":
                raise AssertionError(f"{path.name} names ApiError at line {node.lineno}")
