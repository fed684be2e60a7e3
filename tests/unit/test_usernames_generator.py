"""Dice-roll usernames from identity's curated word lists: always valid, short and clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatpop_common.profanity import is_profane
from chatpop_common.usernames import USERNAME_MAX_LENGTH, is_reserved, normalize_username
from chatpop_identity.generator import (
    ADJECTIVES_FILE,
    NOUNS_FILE,
    WORDLIST_DIR,
    UsernameGenerator,
    WordListError,
    load_words,
)

SHAPE = re.compile(r"(?P<adjective>[A-Z][a-z]+)(?P<noun>[A-Z][a-z]+)(?P<number>[1-9][0-9]*)")
ADJECTIVES = load_words(WORDLIST_DIR / ADJECTIVES_FILE)
NOUNS = load_words(WORDLIST_DIR / NOUNS_FILE)


def test_the_shipped_lists_are_large_enough() -> None:
    assert len(ADJECTIVES) >= 150
    assert len(NOUNS) >= 150


def test_every_adjective_noun_pair_is_a_clean_valid_username() -> None:
    """Generated names skip the profanity filter at join, so every pair is checked here instead."""
    problems = []
    for adjective in ADJECTIVES:
        for noun in NOUNS:
            pair = adjective + noun
            if is_profane(pair) or is_reserved(pair):
                problems.append(pair)
            normalize_username(pair + "7")
    assert problems == []


@pytest.mark.parametrize("digits", [1, 2, 3, 4, 5, 6])
def test_names_have_the_asked_digits_and_never_exceed_15_characters(digits: int) -> None:
    generator = UsernameGenerator.from_directory()
    for _ in range(300):
        name = generator.generate(digits)
        match = SHAPE.fullmatch(name)
        assert match is not None, name
        assert len(name) <= USERNAME_MAX_LENGTH
        assert len(match["number"]) == digits
        assert normalize_username(name) == name


def test_more_digits_than_fit_are_capped() -> None:
    generator = UsernameGenerator(["Swift"], ["Wolf"])
    assert generator.max_digits == 6
    name = generator.generate(12)
    assert len(name) <= USERNAME_MAX_LENGTH
    assert len(SHAPE.fullmatch(name)["number"]) == 6  # type: ignore[index]
    long_words = UsernameGenerator(["Abcdefgh"], ["Abcdef"])
    assert long_words.max_digits == 1
    assert len(long_words.generate(3)) == 15


def test_a_batch_is_distinct_even_in_a_tiny_namespace() -> None:
    generator = UsernameGenerator(["Red"], ["Fox"])
    batch = generator.batch(20, digits=1)
    assert len(batch) == len(set(batch))
    assert set(batch) <= {f"RedFox{n}" for n in range(1, 10)}
    assert len(generator.batch(10, digits=3)) == 10


def test_word_lists_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\nSwift\nnot capitalised\n")
    with pytest.raises(WordListError, match=r"bad.txt:3"):
        load_words(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    with pytest.raises(WordListError, match="no words"):
        load_words(empty)
    with pytest.raises(WordListError, match="cannot be read"):
        load_words(tmp_path / "missing.txt")
    with pytest.raises(WordListError, match="room for a number"):
        UsernameGenerator(["Abcdefghijklmn"], ["Xyz"])


def test_digits_never_leet_spell_a_bad_word_across_the_noun() -> None:
    """ "Aspen15" reads "aspenis": the number, not just the words, has to come out clean."""
    generator = UsernameGenerator(["Ample"], ["Aspen"])
    names = {generator.generate(2) for _ in range(2000)}
    assert not any(is_profane(name) for name in names)
    assert "AmpleAspen15" not in names
    assert len(names) > 80


def test_a_namespace_with_no_clean_name_is_an_error_not_a_loop() -> None:
    generator = UsernameGenerator(["Ample"], ["Penis"])
    with pytest.raises(WordListError, match="no clean"):
        generator.generate(1)
