"""API key format: prefix, base62 body of 32 random bytes, CRC checksum (no database needed)."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from core.apikeys import KEY_LENGTH, KEY_PREFIX, display_prefix, generate_key, hash_key, is_well_formed

B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def test_generated_keys_are_well_formed_and_distinct() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX) and len(key) == KEY_LENGTH
        assert all(c in B62 for c in key[len(KEY_PREFIX):])
        assert is_well_formed(key)
    # 43 base62 characters carry at least 256 bits
    assert 62 ** (KEY_LENGTH - len(KEY_PREFIX) - 6) >= 2**256


def test_malformed_keys_are_rejected() -> None:
    key = generate_key()
    for bad in ("", KEY_PREFIX, key[:-1], key + "a", "sk-" + key[3:], key.replace("nx_live_", "nx_test_"),
                key[:-6] + "======", " " + key[1:], key.upper()):
        assert not is_well_formed(bad), bad


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    key = generate_key()
    pos = data.draw(st.integers(min_value=0, max_value=len(key) - 1), label="position")
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != key[pos]), label="char")
    changed = key[:pos] + replacement + key[pos + 1:]
    assert not is_well_formed(changed)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_adjacent_transposition_is_rejected(data: st.DataObject) -> None:
    key = generate_key()
    pos = data.draw(st.integers(min_value=len(KEY_PREFIX), max_value=len(key) - 2))
    if key[pos] == key[pos + 1]:
        return
    swapped = key[:pos] + key[pos + 1] + key[pos] + key[pos + 2:]
    assert not is_well_formed(swapped)


def test_hash_depends_on_pepper_and_prefix_is_short() -> None:
    key = generate_key()
    assert hash_key(key, "a") != hash_key(key, "b")
    assert hash_key(key, "a") == hash_key(key, "a")
    assert key not in hash_key(key, "a")
    assert display_prefix(key) == key[:14] and key.startswith(display_prefix(key))
