"""Kaggle ``paultimothymooney/chest-xray-pneumonia`` in miniature (datasets.md section 1).

Reproduces: the ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` tree; the three naming styles
(``IM-…``, ``NORMAL2-IM-…``, ``personN_{bacteria|virus}_M``) and the Mendeley v3 ``NORMAL-…``/
``BACTERIA-…`` names; a person with two images in one split; ``person1`` in train and in test (two
different children); one basename in two splits; an RGB JPEG and a tiny image; ``.DS_Store``,
``__MACOSX/`` and the nested duplicate ``chest_xray/chest_xray`` tree the loader must not read (each of
its files a rejected row).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from helpers.sources.images import write_jpeg

# relative path -> (labels, patient id, official split)
FILES = {
    "train/NORMAL/IM-0115-0001.jpeg": (["No Finding"], "train/IM-0115", "train"),
    "train/NORMAL/IM-0001-0001.jpeg": (["No Finding"], "train/IM-0001", "train"),
    "train/NORMAL/NORMAL2-IM-0262-0001.jpeg": (["No Finding"], "train/NORMAL2-IM-0262", "train"),
    "train/NORMAL/NORMAL-1049278-0001.jpeg": (["No Finding"], "train/1049278", "train"),
    "train/PNEUMONIA/person23_bacteria_76.jpeg": (["Pneumonia"], "train/person23", "train"),
    "train/PNEUMONIA/person23_bacteria_77.jpeg": (["Pneumonia"], "train/person23", "train"),
    "train/PNEUMONIA/person1_bacteria_1.jpeg": (["Pneumonia"], "train/person1", "train"),
    "train/PNEUMONIA/BACTERIA-1135262-0001.jpeg": (["Pneumonia"], "train/1135262", "train"),
    "val/NORMAL/NORMAL2-IM-1427-0001.jpeg": (["No Finding"], "train/NORMAL2-IM-1427", "val"),
    "val/PNEUMONIA/person1946_bacteria_4874.jpeg": (["Pneumonia"], "train/person1946", "val"),
    "test/NORMAL/IM-0001-0001.jpeg": (["No Finding"], "test/IM-0001", "test"),
    "test/PNEUMONIA/person1_virus_6.jpeg": (["Pneumonia"], "test/person1", "test"),
}
RGB_FILE = "train/PNEUMONIA/person23_bacteria_77.jpeg"
TINY_FILE = "val/NORMAL/NORMAL2-IM-1427-0001.jpeg"
SUBTYPES = {
    "train/PNEUMONIA/person23_bacteria_76.jpeg": "bacterial",
    "test/PNEUMONIA/person1_virus_6.jpeg": "viral",
}


@dataclass
class PneumoniaFixture:
    root: Path  # what `path:` points at (the unzipped Kaggle download)
    tree: Path  # the chest_xray folder that must be read
    expected: dict[str, tuple[list[str], str, str]] = field(default_factory=lambda: dict(FILES))


def build(root: Path) -> PneumoniaFixture:
    tree = Path(root) / "chest_xray"
    for i, rel in enumerate(FILES):
        size = (18, 14) if rel == TINY_FILE else (56, 48)
        write_jpeg(tree / rel, seed=100 + i, size=size, mode="RGB" if rel == RGB_FILE else "L")
    (tree / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    macos = Path(root) / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    macos.mkdir(parents=True)
    (macos / "._IM-0115-0001.jpeg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    # the Kaggle zip's nested duplicate of the whole tree
    for split in ("train", "val", "test"):
        shutil.copytree(tree / split, tree / "chest_xray" / split)
    return PneumoniaFixture(Path(root), tree)
