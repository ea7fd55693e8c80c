"""The rule that splits a backend's batch token total over its inputs (embedding_cache.apportion)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.embedding_cache import apportion, no_store


@given(st.integers(0, 10**6), st.lists(st.integers(0, 10**5), min_size=1, max_size=300))
def test_parts_sum_exactly_to_the_total(total: int, weights: list[int]) -> None:
    parts = apportion(total, weights)
    assert len(parts) == len(weights) and sum(parts) == total
    assert all(0 <= p <= total for p in parts)
    if total >= len(weights):
        assert min(parts) >= 1  # no input is free when the total allows it


@given(st.integers(0, 10**4), st.lists(st.integers(1, 1000), min_size=2, max_size=50))
def test_heavier_inputs_never_get_fewer_tokens(total: int, weights: list[int]) -> None:
    parts = apportion(total, weights)
    for i, wi in enumerate(weights):
        for j, wj in enumerate(weights):
            if wi > wj:
                assert parts[i] >= parts[j]


def test_examples() -> None:
    assert apportion(10, [1, 1]) == [5, 5]
    assert apportion(3, [1, 1]) == [2, 1]  # the remainder goes to the earlier input on a tie
    assert apportion(1, [5, 5, 5]) == [1, 0, 0]  # fewer tokens than inputs: no floor
    assert apportion(7, [0]) == [7] and apportion(0, []) == []


def test_no_store_directive() -> None:
    assert no_store("no-store") and no_store("No-Store") and no_store("max-age=0, no-store")
    assert not no_store("") and not no_store("no-cache") and not no_store("no-storex")
