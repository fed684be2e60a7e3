"""The username profanity filter against its shipped corpus of clean and dirty names."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatpop_common.errors import InvalidArgument
from chatpop_common.profanity import WORDS_FILE, ProfanityFilter, WordLists, is_profane, load_word_lists
from chatpop_common.usernames import normalize_username

CORPUS = Path(__file__).with_name("profanity_corpus.tsv")


def _corpus() -> list[tuple[str, str, str]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        text, verdict, why = line.split("\t")
        assert verdict in ("clean", "profane"), line
        rows.append((text, verdict, why))
    return rows


CASES = _corpus()


def test_the_corpus_covers_both_verdicts_and_every_disguise() -> None:
    verdicts = [verdict for _, verdict, _ in CASES]
    assert verdicts.count("clean") >= 40
    assert verdicts.count("profane") >= 60
    texts = {text for text, _, _ in CASES}
    # The cases the product names explicitly.
    assert {"a$$", "sh!t", "s_h_i_t", "password", "assistant", "Scunthorpe"} <= texts


@pytest.mark.parametrize(("text", "verdict", "why"), CASES, ids=[f"{v}:{t}" for t, v, _ in CASES])
def test_corpus_verdict(text: str, verdict: str, why: str) -> None:
    assert is_profane(text) == (verdict == "profane"), why


def test_every_listed_term_is_caught_and_every_allowed_word_passes() -> None:
    lists = load_word_lists()
    for term in (*lists.anywhere, *lists.word):
        assert is_profane(term), term
        assert is_profane(term.upper()), term
    for word in lists.allow:
        assert not is_profane(word), word


def test_the_word_file_is_well_formed() -> None:
    lists = load_word_lists(WORDS_FILE)
    for section in (lists.anywhere, lists.word, lists.allow):
        assert list(section) == sorted(section)
        assert len(set(section)) == len(section)
    # Every allowed word exists to excuse some [anywhere] term it contains.
    bare = ProfanityFilter(WordLists(anywhere=lists.anywhere, word=(), allow=()))
    for word in lists.allow:
        assert bare.is_profane(word), f"{word} excuses nothing"


def test_a_malformed_word_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("[anywhere]\nbadword\nTwo Words\n")
    with pytest.raises(ValueError, match=r"words.txt:3"):
        load_word_lists(path)
    path.write_text("orphan\n")
    with pytest.raises(ValueError, match="outside a section"):
        load_word_lists(path)


@pytest.mark.parametrize("name", ["Sh1t_Head", "B1tch_99", "CoolAss99", "Fvck_It", "a55_hat"])
def test_usernames_with_profanity_are_refused_with_their_own_code(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize_username(name)
    assert info.value.code == "username_profane"
    assert "not allowed" in info.value.message


@pytest.mark.parametrize("name", ["Scunthorpe", "password", "assistant", "Classic_Car", "Therapist"])
def test_usernames_with_harmless_look_alike_words_are_accepted(name: str) -> None:
    assert normalize_username(name) == name


def test_generated_names_may_skip_the_filter() -> None:
    assert normalize_username("CoolAss99", check_profanity=False) == "CoolAss99"
    with pytest.raises(InvalidArgument) as info:
        normalize_username("bad name", check_profanity=False)
    assert info.value.code == "username_invalid"
