"""Username rules shared by accounts and rooms (chatpop_common.usernames)."""

from __future__ import annotations

import pytest

from chatpop_common.errors import InvalidArgument
from chatpop_common.usernames import normalize_username, username_key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice", "Alice"),
        ("  Bob_99  ", "Bob_99"),
        ("\tSwiftWolf123\n", "SwiftWolf123"),
        ("12345", "12345"),
        ("_____", "_____"),
        ("abcdefghijklmno", "abcdefghijklmno"),
        ("Hostess", "Hostess"),
        ("Administration", "Administration"),
        ("helpful_1", "helpful_1"),
    ],
)
def test_valid_usernames_are_trimmed_and_keep_their_case(raw: str, expected: str) -> None:
    assert normalize_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "    ",
        "abcd",
        "abcdefghijklmnop",
        "bad name",
        "a$$hat",
        "robert'); DROP",
        "<script>",
        "ÄliceX",
        "alice😀x",
        "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",  # full-width letters
        "name-with-dash",
    ],
)
def test_invalid_usernames_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize_username(raw)
    assert info.value.code == "username_invalid"
    assert info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        "admin",
        "ADMIN",
        "Moderator",
        "system",
        "support",
        "Admin_1",
        "_host_",
        "root1",
        "ChatPop",
        "chatpop_team",
    ],
)
def test_system_words_are_reserved(raw: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize_username(raw)
    assert info.value.code == "username_reserved"


def test_uniqueness_key_ignores_case() -> None:
    assert username_key(normalize_username("Alice")) == username_key(normalize_username(" alice "))
    assert username_key("Alice") != username_key("Alice2")
