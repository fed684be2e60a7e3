"""Profanity filter for usernames (and other short public text).

The terms live in `profanity.txt` next to this module (see its header for the three sections).
Before matching, text is normalised so the usual disguises do not help:
- Unicode compatibility forms and accents are folded (full-width letters, "f\u00fcck"), and a few
  Cyrillic and Greek look-alikes count as the Latin letters they imitate (a Cyrillic es for "c");
- case is ignored, and leet-speak digits and symbols stand for the letters they resemble
  ("a$$", "sh!t", "5hit", "@sshole");
- a letter may repeat ("fuuuck");
- separators are dropped ("s_h_i_t", "f.u.c.k", "f u c k").

`[anywhere]` terms are refused wherever they appear once separators are dropped, unless an
`[allow]` word that occurs around the match explains it ("Scunthorpe", "therapist", "cocktail"),
or the match is made almost only of digits (random ids such as "c117" are not "clit").
`[word]` terms are short and hide in ordinary words ("classic", "sextant", "cumulus"), so they are
refused only as a whole word: a part of the text between separators, case changes ("CoolAss") or
digits ("Ass99", "tits4u"), also when written in leet-speak ("A55").

Generated usernames pass through here once, when identity draws them (their digits can join a
word into something else); a unit test checks every word pair of the shipped lists as well.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

WORDS_FILE = Path(__file__).with_name("profanity.txt")

# Characters that stand for a letter in leet-speak (besides the letter itself).
LEET: dict[str, str] = {
    "a": "4@",
    "b": "8",
    "c": "(<",
    "e": "3",
    "g": "9",
    "i": "1!|",
    "l": "1|",
    "o": "0",
    "s": "5$",
    "t": "7+",
    "u": "v",
}
_LEET_SYMBOLS = frozenset(ch for chars in LEET.values() for ch in chars if not ch.isalnum())

# Letters from other scripts that render like Latin ones; NFKC leaves them alone.
CONFUSABLES: dict[str, str] = {
    "\u0430": "a",  # cyrillic small letter a
    "\u0432": "b",  # cyrillic small letter ve
    "\u0441": "c",  # cyrillic small letter es
    "\u0435": "e",  # cyrillic small letter ie
    "\u0451": "e",  # cyrillic small letter io
    "\u04bb": "h",  # cyrillic small letter shha
    "\u0456": "i",  # cyrillic small letter byelorussian-ukrainian i
    "\u0458": "j",  # cyrillic small letter je
    "\u043a": "k",  # cyrillic small letter ka
    "\u043c": "m",  # cyrillic small letter em
    "\u043d": "h",  # cyrillic small letter en
    "\u043e": "o",  # cyrillic small letter o
    "\u0440": "p",  # cyrillic small letter er
    "\u0455": "s",  # cyrillic small letter dze
    "\u0442": "t",  # cyrillic small letter te
    "\u0443": "y",  # cyrillic small letter u
    "\u0445": "x",  # cyrillic small letter ha
    "\u0461": "w",  # cyrillic small letter omega
    "\u03b1": "a",  # greek small letter alpha
    "\u03b2": "b",  # greek small letter beta
    "\u03b5": "e",  # greek small letter epsilon
    "\u03b7": "n",  # greek small letter eta
    "\u03b9": "i",  # greek small letter iota
    "\u03ba": "k",  # greek small letter kappa
    "\u03bd": "v",  # greek small letter nu
    "\u03bf": "o",  # greek small letter omicron
    "\u03c1": "p",  # greek small letter rho
    "\u03c4": "t",  # greek small letter tau
    "\u03c5": "u",  # greek small letter upsilon
    "\u03c7": "x",  # greek small letter chi
}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLES | {k.upper(): v for k, v in CONFUSABLES.items()})

_SECTIONS = ("anywhere", "word", "allow")
_TERM = re.compile(r"[a-z]+")
# A case change starts a new word: "CoolAss99" → Cool, Ass99; "a55Hat" → a55, Hat.
_CASE_BOUNDARY = re.compile(r"(?<=[a-z0-9$@!|+(<])(?=[A-Z])")
_LETTER_RUN = re.compile(r"[a-z]+")
_MIN_LETTERS = 2


@dataclass(frozen=True)
class WordLists:
    anywhere: tuple[str, ...]
    word: tuple[str, ...]
    allow: tuple[str, ...]


def load_word_lists(path: Path = WORDS_FILE) -> WordLists:
    """Parse the sectioned word file; a malformed file is a programming error, reported with its line."""
    sections: dict[str, list[str]] = {name: [] for name in _SECTIONS}
    current: list[str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            if name not in sections:
                raise ValueError(f"{path}:{number}: unknown section {line}")
            current = sections[name]
        elif current is None:
            raise ValueError(f"{path}:{number}: entry outside a section")
        elif not _TERM.fullmatch(line):
            raise ValueError(f"{path}:{number}: entries are lower-case letters only, got {line!r}")
        else:
            current.append(line)
    return WordLists(**{name: tuple(words) for name, words in sections.items()})


def _fold(text: str) -> str:
    """Compatibility forms, look-alikes and accents folded to plain characters; case kept."""
    text = unicodedata.normalize("NFKC", text).translate(_CONFUSABLE_TABLE)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _is_kept(ch: str) -> bool:
    return (ch.isascii() and ch.isalnum()) or ch in _LEET_SYMBOLS


def _collapse(folded: str) -> str:
    """Lower case without separators: what [anywhere] terms are searched in."""
    return "".join(ch for ch in folded.lower() if _is_kept(ch))


def _words(folded: str) -> list[str]:
    """The separate words of the text, split at separators, case changes and digit-to-letter steps."""
    parts = re.split(r"[^A-Za-z0-9" + re.escape("".join(sorted(_LEET_SYMBOLS))) + r"]+", folded)
    words: list[str] = []
    for part in parts:
        words.extend(piece.lower() for piece in _CASE_BOUNDARY.split(part) if piece)
    return words


def _letter(ch: str) -> str:
    return "[" + re.escape(ch + LEET.get(ch, "")) + "]+"


def _pattern(terms: tuple[str, ...]) -> str:
    # Longest first, so the alternation prefers "asshole" to "ass" at the same position.
    return "|".join("".join(_letter(ch) for ch in term) for term in sorted(terms, key=len, reverse=True))


class ProfanityFilter:
    def __init__(self, lists: WordLists) -> None:
        # Zero-width lookaheads report a match at every position, so overlapping terms are all seen.
        self._anywhere = re.compile(f"(?=({_pattern(lists.anywhere)}))") if lists.anywhere else None
        self._allow = re.compile(f"(?=({_pattern(lists.allow)}))") if lists.allow else None
        self._word = re.compile(f"(?:{_pattern(lists.word)})") if lists.word else None

    def _anywhere_match(self, collapsed: str) -> bool:
        if self._anywhere is None:
            return False
        allowed = [m.span(1) for m in self._allow.finditer(collapsed)] if self._allow else []
        for match in self._anywhere.finditer(collapsed):
            start, end = match.span(1)
            # Digits alone do not spell a word inside longer text: random ids and numbers
            # ("cc117", "b00b5") would otherwise read as terms. Two different real letters or
            # symbols must be in it.
            if len({ch for ch in match.group(1) if not ch.isdigit()}) < _MIN_LETTERS:
                continue
            if not any(a_start <= start and end <= a_end for a_start, a_end in allowed):
                return True
        return False

    def _word_match(self, words: list[str]) -> bool:
        if self._word is None:
            return False
        for word in words:
            # The word as written (leet digits included: "a55"), and its letters around any
            # digits ("Ass99", "tits4u").
            for variant in {word, *_LETTER_RUN.findall(word)}:
                if self._word.fullmatch(variant):
                    return True
        return False

    def is_profane(self, text: str) -> bool:
        folded = _fold(text)
        return self._anywhere_match(_collapse(folded)) or self._word_match(_words(folded))


@functools.cache
def default_filter() -> ProfanityFilter:
    return ProfanityFilter(load_word_lists())


def is_profane(text: str) -> bool:
    """True when the text contains a refused term in any of the disguises described above."""
    return default_filter().is_profane(text)
