"""Dice-roll usernames: Adjective + Noun + Number (SwiftWolf42), from curated word lists.

The lists ship in `wordlists/` (one capitalised word per line, `#` comments) and are curated (a unit
test checks every pair against the profanity filter). Each draw is still checked here, since digits
read as leet-speak can join into a word, and rooms trusts a held roll without filtering it again.
A name never exceeds the username maximum of 15 characters: when the number needs more digits,
only word pairs short enough for it are drawn. Numbers come from a CSPRNG, so the next roll cannot
be predicted and claimed by someone else first.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from chatpop_common.profanity import is_profane
from chatpop_common.usernames import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH

WORDLIST_DIR = Path(__file__).with_name("wordlists")
ADJECTIVES_FILE = "adjectives.txt"
NOUNS_FILE = "nouns.txt"
DEFAULT_DIGITS = 2
_MAX_DRAWS = 64
MAX_DIGITS = 6

_WORD = re.compile(r"[A-Z][a-z]{2,}")


class WordListError(ValueError):
    """A word list that is missing, empty or holds something that is not a capitalised word."""


def load_words(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WordListError(f"word list {path} cannot be read: {exc.strerror}") from None
    words: list[str] = []
    for number, raw in enumerate(lines, start=1):
        word = raw.strip()
        if not word or word.startswith("#"):
            continue
        if not _WORD.fullmatch(word):
            raise WordListError(f"{path}:{number}: {word!r} is not a capitalised word of letters A-Z")
        if word not in words:
            words.append(word)
    if not words:
        raise WordListError(f"word list {path} has no words")
    return tuple(words)


class UsernameGenerator:
    def __init__(self, adjectives: Sequence[str], nouns: Sequence[str]) -> None:
        if not adjectives or not nouns:
            raise WordListError("both word lists need at least one word")
        shortest = min(map(len, adjectives)) + min(map(len, nouns))
        if shortest + 1 > USERNAME_MAX_LENGTH:
            raise WordListError(f"no adjective + noun pair leaves room for a number in {USERNAME_MAX_LENGTH}")
        self._adjectives = tuple(adjectives)
        self._nouns = tuple(nouns)
        self._shortest_noun = min(map(len, nouns))
        # Most digits any pair can carry; callers asking for more get this many.
        self.max_digits = min(MAX_DIGITS, USERNAME_MAX_LENGTH - shortest)

    @classmethod
    def from_directory(cls, directory: Path = WORDLIST_DIR) -> UsernameGenerator:
        return cls(load_words(directory / ADJECTIVES_FILE), load_words(directory / NOUNS_FILE))

    def _pair(self, room: int) -> tuple[str, str]:
        """A random pair whose letters fit in `room` characters (some pair always does)."""
        adjectives = [a for a in self._adjectives if len(a) + self._shortest_noun <= room]
        adjective = secrets.choice(adjectives)
        noun = secrets.choice([n for n in self._nouns if len(adjective) + len(n) <= room])
        return adjective, noun

    def generate(self, digits: int = DEFAULT_DIGITS) -> str:
        digits = max(1, min(digits, self.max_digits))
        low = 1 if digits == 1 else 10 ** (digits - 1)
        # The word lists are clean on their own, but digits read as leet-speak can join a word into
        # something that is not ("Aspen15" reads "aspenis"); such draws are thrown away.
        for _ in range(_MAX_DRAWS):
            adjective, noun = self._pair(USERNAME_MAX_LENGTH - digits)
            number = low + secrets.randbelow(10**digits - low)
            name = f"{adjective}{noun}{number}"
            assert USERNAME_MIN_LENGTH <= len(name) <= USERNAME_MAX_LENGTH
            if not is_profane(name):
                return name
        raise WordListError(f"no clean {digits}-digit name found in {_MAX_DRAWS} draws")

    def batch(self, count: int, digits: int = DEFAULT_DIGITS) -> list[str]:
        """Up to `count` distinct names (fewer only when the namespace for these digits is tiny)."""
        names: dict[str, None] = {}
        for _ in range(count * 4):
            names.setdefault(self.generate(digits), None)
            if len(names) == count:
                break
        return list(names)
