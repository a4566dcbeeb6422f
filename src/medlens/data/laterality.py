"""The text of a horizontally flipped radiograph: every side the report names, mirrored, or no flip at all.

A flip that leaves "left effusion" under an image whose effusion is now on the right teaches the model
the wrong side (seed 003 mirrored freely). Reports name sides in more ways than the words left and
right: abbreviations (RLL, LUQ, Rt.), sided adjectives (right-sided, leftward), the prefixes dextro- and
levo- (dextroscoliosis, levocardia). Some anatomy has no mirror image: the right lung's middle lobe, the
left lung's lingula. :func:`mirror_laterality` mirrors every side it recognises and returns None when the
text cannot be mirrored exactly (a lobe without a mirror image, a bare "R" or "L"), so that the caller
does not flip that sample.

What no text says is not mirrored either: the heart, the aortic arch and the gastric bubble move to the
other side in a flipped chest radiograph whatever the report says, which is why the chest presets keep
flips off.
"""

from __future__ import annotations

import re

__all__ = ["mirror_laterality"]

# whole words and abbreviations, each with its mirror (lower case; the case of the match is kept)
_MIRROR = {
    "left": "right",
    "right": "left",
    "leftward": "rightward",
    "rightward": "leftward",
    "leftwards": "rightwards",
    "rightwards": "leftwards",
    "lt": "rt",
    "rt": "lt",
    "lul": "rul",
    "rul": "lul",
    "lll": "rll",
    "rll": "lll",  # upper and lower lobes
    "luq": "ruq",
    "ruq": "luq",
    "llq": "rlq",
    "rlq": "llq",  # abdominal quadrants
    "lue": "rue",
    "rue": "lue",
    "lle": "rle",
    "rle": "lle",  # upper and lower extremities
}
_SIDES = re.compile(r"\b(" + "|".join(sorted(_MIRROR, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_PREFIX = re.compile(r"\b(dextro|levo)(?=[a-z-])", re.IGNORECASE)
_PREFIX_MIRROR = {"dextro": "levo", "levo": "dextro"}
# anatomy with no mirror image, and a side given by one letter (R/L markers, "L" for litre...)
_UNMIRRORABLE = re.compile(r"\b(middle\s+lobes?|rml|lingula|lingular|[RL])\b", re.IGNORECASE)
_LONE_LETTER = re.compile(r"\b[RL]\b")
# "left" as a verb: a catheter left in place is on no side
_VERB_LEFT = re.compile(
    r"\bleft(?=\s+(?:in\s+place|in\s+situ|behind|untouched|unchanged|alone|open)\b)", re.IGNORECASE
)


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[0].isupper():
        return word[0].upper() + word[1:]
    return word


def mirror_laterality(text: str) -> str | None:
    """The report of the horizontally mirrored image, or None when it cannot be mirrored exactly.

    Args:
        text: a report.

    Returns:
        ``text`` with every named side swapped (case kept): left/right and their -ward forms, lobe,
        quadrant and limb abbreviations (RLL <-> LLL, RUQ <-> LUQ), Rt/Lt, dextro-/levo-; None when it
        names a middle lobe or the lingula (no mirror image), or holds a bare R or L. Mirroring twice
        gives the text back.
    """
    for m in _UNMIRRORABLE.finditer(text):
        word = m.group(1)
        if len(word) > 1 or _LONE_LETTER.fullmatch(word):  # "r"/"l" in lower case are not sides
            return None
    verbs = {m.start() for m in _VERB_LEFT.finditer(text)}

    def side(m: re.Match) -> str:
        word = m.group(1)
        if m.start() in verbs:
            return word
        return _same_case(_MIRROR[word.lower()], word)

    mirrored = _SIDES.sub(side, text)
    return _PREFIX.sub(lambda m: _same_case(_PREFIX_MIRROR[m.group(1).lower()], m.group(1)), mirrored)
