"""Room settings checks: what is stored, and the stable codes bad input gets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import InvalidArgument
from chatpop_rooms.validation import (
    require_access_code_for,
    validate_description,
    validate_name,
    validate_new_access_code,
    validate_retention_days,
    validate_theme,
    validate_visibility,
)


def _code_of(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(InvalidArgument) as raised:
        call(*args)
    return raised.value.code


def test_name_is_trimmed_and_keeps_unicode() -> None:
    assert validate_name("  Late night café ☕  ") == "Late night café ☕"
    assert validate_name("x" * 80) == "x" * 80


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 81, "bad\x00name", "two\nlines", "tab\tbed", "evil\u202eeman", "bell\x07"],
)
def test_bad_names_are_refused(name: str) -> None:
    assert _code_of(validate_name, name) == "invalid_name"


def test_description_allows_line_breaks_up_to_500() -> None:
    assert validate_description("") == ""
    assert validate_description(" first line\nsecond\tline ") == "first line\nsecond\tline"
    assert validate_description("d" * 500) == "d" * 500


@pytest.mark.parametrize("description", ["d" * 501, "nul\x00", "escape\x1b[31m", "iso\u2066late"])
def test_bad_descriptions_are_refused(description: str) -> None:
    assert _code_of(validate_description, description) == "invalid_description"


def test_visibility_and_theme_defaults() -> None:
    assert validate_visibility(rooms_pb2.VISIBILITY_UNSPECIFIED) == "public"
    assert validate_visibility(rooms_pb2.VISIBILITY_PRIVATE) == "private"
    assert validate_theme(rooms_pb2.THEME_UNSPECIFIED) == "purple-dream"
    assert validate_theme(rooms_pb2.THEME_DARK_MODE) == "dark-mode"
    assert validate_theme(rooms_pb2.THEME_OCEAN_BLUE) == "ocean-blue"


def test_unknown_enum_values_are_refused() -> None:
    assert _code_of(validate_visibility, 99) == "invalid_visibility"
    assert _code_of(validate_theme, 42) == "invalid_theme"


@pytest.mark.parametrize(("value", "expected"), [(None, 30), (0, 0), (1, 1), (3650, 3650)])
def test_retention_days(value: int | None, expected: int) -> None:
    assert validate_retention_days(value) == expected


@pytest.mark.parametrize("value", [-1, 3651, 2**31 - 1])
def test_retention_out_of_range(value: int) -> None:
    assert _code_of(validate_retention_days, value) == "invalid_retention"


def test_access_codes() -> None:
    assert validate_new_access_code("") == ""
    assert validate_new_access_code("  open sesame ") == "open sesame"
    assert validate_new_access_code("abcd") == "abcd"
    assert validate_new_access_code("c" * 64) == "c" * 64
    for bad in ["abc", "  abc  ", "c" * 65, "ab\x00cd"]:
        assert _code_of(validate_new_access_code, bad) == "invalid_access_code"


def test_private_rooms_need_a_code_and_public_ones_take_none() -> None:
    require_access_code_for("private", "secret")
    require_access_code_for("public", "")
    assert _code_of(require_access_code_for, "private", "") == "access_code_required"
    assert _code_of(require_access_code_for, "public", "secret") == "access_code_not_allowed"
