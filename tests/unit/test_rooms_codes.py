"""Room codes: length, alphabet without look-alikes, case-insensitive lookup form."""

from __future__ import annotations

import pytest

from chatpop_rooms.codes import ALPHABET, LENGTH, new_room_code, normalize_room_code


def test_alphabet_has_no_ambiguous_characters() -> None:
    assert not set("0O1IL") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET)
    assert ALPHABET.isupper()


def test_codes_have_eight_characters_of_the_alphabet() -> None:
    codes = [new_room_code() for _ in range(2000)]
    assert all(len(code) == LENGTH == 8 for code in codes)
    assert all(set(code) <= set(ALPHABET) for code in codes)
    # 31**8 possibilities: any repeat among a few thousand draws means the source is not random.
    assert len(set(codes)) == len(codes)
    # Every symbol turns up, so no part of the alphabet is silently unused.
    assert set("".join(codes)) == set(ALPHABET)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ABCDEFGH", "ABCDEFGH"),
        ("abcdefgh", "ABCDEFGH"),
        ("  k7m2p9qz \n", "K7M2P9QZ"),
        ("ABCDEFG", None),
        ("ABCDEFGHJ", None),
        ("ABCDEFG0", None),
        ("ABCDEFGI", None),
        ("ABCD-FGH", None),
        ("", None),
    ],
)
def test_normalize_room_code(raw: str, expected: str | None) -> None:
    assert normalize_room_code(raw) == expected
