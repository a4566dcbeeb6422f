"""The text of a horizontally flipped radiograph: every side the report names, mirrored, or no flip at all.

A flip that leaves "left effusion" under an image whose effusion is now on the right teaches the model
the wrong side (seed 003 mirrored freely). Reports name sides in more ways than the words left and
right: abbreviations (RLL, LUQ, Rt.), sided adjectives (right-sided, leftward), the prefixes dextro- and
levo- (dextroscoliosis, levocardia). Some anatomy has no mirror image: the right lung's middle lobe,
horizontal fissure and azygos lobe, the left lung's lingula and cardiac notch; the heart's chambers and
the aortic arch are on their side in every patient, so "left ventricle" has no mirror either. Some side
words name no side of the image: "left-to-right shunt" is a flow, "left shift" a blood count, RT-PCR a
test, "left home" a verb. :func:`mirror_laterality` mirrors every side it recognises, keeps what is no
side, and returns None when the text cannot be mirrored exactly, so that the caller does not flip that
sample. The cases come from the reports in ``shared/realdata`` and the seeds' examples.

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
_MIRROR |= {"leftsided": "rightsided", "rightsided": "leftsided"}  # written as one word
_SIDES = re.compile(r"\b(" + "|".join(sorted(_MIRROR, key=len, reverse=True)) + r")\b", re.IGNORECASE)
# dextro-/levo- only where they give a side or a direction: dextrose, levothyroxine and levofloxacin are drugs
_PREFIX = re.compile(
    r"\b(dextro|levo)(?=-?(?:scolio|convex|concav|cardi|posit|rotat|rotar|vers|vert|curv|flex))",
    re.IGNORECASE,
)
_PREFIX_MIRROR = {"dextro": "levo", "levo": "dextro"}
_SIDE = r"(?:left|right|lt|rt)(?:[\s-]*sided)?"
# what cannot be mirrored exactly: anatomy on one side only (a middle lobe, "right middle and lower lobes",
# the horizontal or minor fissure, the azygos lobe or vein, the lingula, the cardiac notch); a side of the
# heart or the aortic arch (on their side in every patient); a side given by one letter (R/L markers, "L"
# for litre); a bare upper-case RT/LT (radiotherapy or a respiratory therapist as often as a side)
_UNMIRRORABLE = re.compile(
    r"\b(?:middle\s+(?:(?:and|&|/|,)\s*\w+\s+)?lobes?|rml|lingula|lingular|(?:horizontal|minor)\s+fissures?"
    r"|azygo\w*|cardiac\s+notch"
    rf"|{_SIDE}[\s-]+(?:heart|cardiac|ventric\w*|atri(?:um|a|al)\w*|aortic\s+arch|coronary)"
    r"|[RL]|(?-i:RT|LT)(?![.-]))\b",
    re.IGNORECASE,
)
# side words that name no side of the image: a direction of flow, a blood count
_NOT_A_SIDE = re.compile(
    r"\b(?:left|right)[\s-]+to[\s-]+(?:left|right)\b|\b(?:left|right)\s+shift\b", re.IGNORECASE
)
# "left" as a verb (a catheter left in place, a patient who left home) and RT-PCR: no side, kept as written
_KEPT = re.compile(
    r"\bleft(?=\s+(?:in\s+place|in\s+situ|behind|untouched|unchanged|untreated|alone|open|over|home"
    r"|hospital|the\s+(?:hospital|ward|unit|country)|against)\b)|\brt(?=[\s-]*pcr\b)",
    re.IGNORECASE,
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
        ``text`` with every named side swapped (case kept): left/right and their -ward and -sided forms,
        lobe, quadrant and limb abbreviations (RLL <-> LLL, RUQ <-> LUQ), Rt/Lt, dextro-/levo- (scoliosis,
        convexity, cardia, position); "left" as a verb and RT-PCR kept. None when it names anatomy on one
        side only (a middle lobe, the horizontal fissure, the azygos lobe, the lingula, the cardiac notch), a
        side of the heart or the aortic arch, a side that is no side ("left-to-right shunt", "left shift"),
        a bare R or L, or an upper-case RT/LT. Mirroring twice gives the text back.
    """
    if _NOT_A_SIDE.search(text):
        return None
    for m in _UNMIRRORABLE.finditer(text):
        word = m.group(0)
        # "r"/"l" in lower case are not sides; an RT of RT-PCR is a test
        if (len(word) > 1 or word.isupper()) and not _KEPT.match(text, m.start()):
            return None
    kept = {m.start() for m in _KEPT.finditer(text)}

    def side(m: re.Match) -> str:
        word = m.group(1)
        if m.start() in kept:
            return word
        return _same_case(_MIRROR[word.lower()], word)

    mirrored = _SIDES.sub(side, text)
    return _PREFIX.sub(lambda m: _same_case(_PREFIX_MIRROR[m.group(1).lower()], m.group(1)), mirrored)
