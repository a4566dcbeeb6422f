"""The bad-input catalogue of issue #4, one test each, across the sources.

Each fault gives either a DataError naming the file (and row) and what was expected, when the whole
file is unusable, or a rejected row with its reason, when one record is; every record read is kept
or rejected (``helpers.sources.run.prepare`` checks ``read = kept + rejected`` on every run).
The archive and credential faults (a zip with a ``../`` entry, missing Kaggle credentials) are in
``tests/unit/data/test_kaggle.py``, next to the rest of the Kaggle source.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helpers.sources import chexpert, manifest, nih, pad_ufes, pneumonia
from helpers.sources.images import (
    write_corrupt,
    write_empty,
    write_jpeg,
    write_png16,
    write_png_bomb,
    write_truncated_jpeg,
)
from helpers.sources.run import prepare
from medlens.errors import DataError, MedlensError


def manifest_with(tmp_path, rows, **settings):
    fixture = manifest.build(tmp_path / "mine", rows)
    return prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root), **settings})


def row(i, **overrides):
    return {
        "id": f"r{i}",
        "image": f"r{i}.png",
        "text": f"Report {i}: clear lungs.",
        "labels": "No Finding",
        "patient_id": f"P{i}",
        **overrides,
    }


def test_missing_column(tmp_path):
    fixture = nih.build_full(tmp_path / "nih")
    lines = fixture.csv.read_text().splitlines()
    fixture.csv.write_text(
        "\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != 1) for line in lines)
    )
    with pytest.raises(DataError) as err:
        prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    message = str(err.value)
    assert message.startswith(f"{fixture.csv}: row 1: missing column 'Finding Labels'")
    assert "expected the columns 'Image Index', 'Finding Labels', 'Patient ID'" in message


def test_wrong_column_names(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0)], columns=["id", "img", "caption"])
    (fixture.root / "manifest.csv").write_text("id,img,caption\nr0,r0.png,Clear lungs.\n")
    with pytest.raises(
        DataError,
        match=r"manifest\.csv: row 1: missing column 'image' \(found 'img': renamed\?\); "
        r"expected the columns 'image', 'text'; the header has 'id', 'img', 'caption'",
    ):
        prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})


def test_corrupt_image(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0), row(1)])
    write_corrupt(fixture.root / "r1.png")
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert set(out.rows) == {"r0"}
    bad = out.rejected["r1"]
    assert bad["reason"] == "unreadable image"
    assert (
        "r1.png: image cannot be decoded" in bad["detail"] and "expected a readable PNG/JPEG" in bad["detail"]
    )
    assert bad["source_ref"].endswith("manifest.csv:3")


def test_truncated_jpeg(tmp_path):
    fixture = pneumonia.build(tmp_path / "data")
    cut = fixture.tree / "train" / "PNEUMONIA" / "person23_bacteria_76.jpeg"
    write_truncated_jpeg(cut, seed=1)
    out = prepare(
        tmp_path, "pneu", {"source": "path", "adapter": "chest_xray_pneumonia", "path": str(fixture.root)}
    )
    bad = out.rejected["train/PNEUMONIA/person23_bacteria_76.jpeg"]
    assert bad["reason"] == "unreadable image" and "truncated" in bad["detail"] and str(cut) in bad["detail"]
    assert out.summary.reasons["unreadable image"] == 1 and len(out.rows) == len(fixture.expected) - 1
    # the zip's nested copy of the tree still holds the whole file: named, not read
    copy = out.rejected["chest_xray/chest_xray/train/PNEUMONIA/person23_bacteria_76.jpeg"]
    assert copy["reason"] == "copy: other bytes than its counterpart"


def test_zero_byte_file(tmp_path):
    fixture = nih.build_full(tmp_path / "nih")
    empty = next((fixture.root / "images_002" / "images").glob("*.png"))
    write_empty(empty)
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    bad = out.rejected[empty.name]
    assert bad["reason"] == "unreadable image"
    assert bad["detail"] == f"{empty}: image file is empty (0 bytes); expected an encoded image"


def test_missing_image_file(tmp_path):
    fixture = pad_ufes.build(tmp_path / "pad")
    next(fixture.root.rglob("PAT_13_21_201.png")).unlink()
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    bad = out.rejected["PAT_13_21_201.png"]
    assert (
        bad["reason"] == "missing image file"
        and "PAT_13_21_201.png is in no imgs_part_N folder" in bad["detail"]
    )
    assert bad["source_ref"].endswith("metadata.csv:8")


def test_huge_declared_dimensions(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0), row(1)])
    write_png_bomb(fixture.root / "r1.png", 100_000, 100_000)
    assert (fixture.root / "r1.png").stat().st_size < 200  # the bomb is tiny on disk
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    bad = out.rejected["r1"]
    assert bad["reason"] == "unreadable image" and "r1.png: image is too large" in bad["detail"]
    assert "10000000000 pixels" in bad["detail"] and "expected at most 64,000,000 pixels" in bad["detail"]


def test_declared_dimensions_just_over_the_limit(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0), row(1)])
    write_png_bomb(fixture.root / "r1.png", 9000, 9000)  # 81 Mpx: over medlens's limit, under PIL's own
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert "image is too large (9000x9000)" in out.rejected["r1"]["detail"]


def test_16_bit_png_is_windowed_to_8_bit(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0)])
    write_png16(fixture.root / "r0.png", seed=3)
    assert Image.open(fixture.root / "r0.png").mode.startswith("I")
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    stored = out.image("r0")
    assert stored.mode == "L"
    arr = np.asarray(stored)
    assert arr.min() <= 5 and arr.max() >= 250  # 1000..5000 of 65535 spread over 0..255, not crushed to black


def test_cmyk_jpeg_is_converted(tmp_path):
    fixture = pad_ufes.build(tmp_path / "pad")
    target = next(fixture.root.rglob("PAT_46_881_14.png"))
    cmyk = write_jpeg(target.with_suffix(".tmp"), seed=5, mode="CMYK")
    target.write_bytes(cmyk.read_bytes())  # a CMYK JPEG under a .png name, as re-exports produce
    cmyk.unlink()
    out = prepare(tmp_path, "pad", {"source": "path", "adapter": "pad_ufes_20", "path": str(fixture.root)})
    stored = out.image("PAT_46_881_14.png")
    assert stored.mode == "RGB"
    expected = np.asarray(Image.open(target).convert("RGB"), dtype=float)
    assert np.abs(np.asarray(stored, dtype=float) - expected).mean() < 8  # converted, not inverted or garbled


def test_non_utf8_bytes_in_a_csv(tmp_path):
    fixture = chexpert.build(tmp_path / "cx")
    csv_path = fixture.root / "train.csv"
    data = csv_path.read_bytes().replace(b",Unknown,", b",Unkn\xf6wn,")  # a Latin-1 byte in row 6
    csv_path.write_bytes(data)
    out = prepare(tmp_path, "cx", {"source": "path", "adapter": "chexpert", "path": str(fixture.root)})
    bad = out.rejected["train/patient00004/study1/view2_frontal.jpg"]
    assert bad["reason"] == "non-UTF-8 bytes in row"
    assert bad["source_ref"] == f"{csv_path}:6" and "\\xf6" in bad["detail"]
    assert "train/patient00001/study1/view1_frontal.jpg" in out.rows  # the other rows are read


def test_empty_text(tmp_path):
    out = manifest_with(tmp_path, [row(0), row(1, text="   ")])
    assert out.rejected["r1"]["reason"] == "empty text" and set(out.rows) == {"r0"}


def test_over_long_text(tmp_path):
    out = manifest_with(tmp_path, [row(0), row(1, text="word " * 1000)], max_text_chars=4000)
    assert out.rejected["r1"]["reason"] == "text longer than 4000 characters"
    assert out.rejected["r1"]["detail"].startswith("word word")


def test_duplicate_id(tmp_path):
    out = manifest_with(tmp_path, [row(0), row(1), row(2, id="r0")])
    assert out.summary.read == 3 and out.summary.kept == 2
    assert out.summary.reasons == {"duplicate id": 1}
    assert out.rejected["r0"]["reason"] == "duplicate id"  # the second r0; the first one is kept
    assert out.rejected["r0"]["source_ref"].endswith("manifest.csv:4") and out.rows["r0"]["text"].startswith(
        "Report 0"
    )


def test_unknown_label(tmp_path):
    fixture = nih.build_full(tmp_path / "nih")
    fixture.csv.write_text(
        fixture.csv.read_text().replace("00000002_000.png,No Finding,", "00000002_000.png,Covid|Mass,")
    )
    out = prepare(tmp_path, "nih", {"source": "path", "adapter": "nih_chest_xray", "path": str(fixture.root)})
    bad = out.rejected["00000002_000.png"]
    assert bad["reason"] == "unknown label 'Covid'" and bad["detail"] == "Covid|Mass"
    assert bad["source_ref"] == f"{fixture.csv}:4"


def test_decoded_images_are_never_enlarged_and_fit_store_size(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0), row(1)])
    write_jpeg(fixture.root / "r0.png", seed=1, size=(900, 600), orientation=6)  # EXIF: rotate 90 degrees
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root), "store_size": 300})
    assert out.image("r0").size == (200, 300)  # rotated upright, then longest side 300
    assert out.image("r1").size == (36, 40)
    assert (
        isinstance(out.rows["r0"]["image"], bytes)
        and Image.open(io.BytesIO(out.rows["r0"]["image"])).format == "PNG"
    )


def test_palette_and_rgba_pngs_are_converted(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0), row(1)])
    grey = Image.open(fixture.root / "r0.png")
    grey.convert("P").save(fixture.root / "r0.png", transparency=0)  # a palette PNG with a transparent index
    rgba = grey.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(fixture.root / "r1.png")
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert out.rejected == {}
    assert out.image("r0").mode == "L" and out.image("r1").mode == "L"
    # half-transparent grey over black: about half as bright as the source
    ratio = np.asarray(out.image("r1"), dtype=float).mean() / np.asarray(grey, dtype=float).mean()
    assert 0.4 < ratio < 0.6


def _manifest_text(tmp_path, text, images=("r0", "r1", "r2", "r3", "r4")):
    fixture = manifest.build(tmp_path / "mine", [row(int(i[1:])) for i in images])
    (fixture.root / "manifest.csv").write_text(text)
    return fixture


def test_an_unclosed_quote_rejects_one_record_and_keeps_the_rest(tmp_path):
    fixture = _manifest_text(
        tmp_path,
        'id,image,text\nr0,r0.png,Clear.\nr1,r1.png,"Effusion.\n'
        "r2,r2.png,Clear.\nr3,r3.png,Clear.\nr4,r4.png,Clear.\n",
    )
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert out.summary.read == 5 and set(out.rows) == {"r0", "r2", "r3", "r4"}  # csv alone reads 2 records
    [bad] = out.rejected.values()
    assert bad["reason"] == "malformed record" and bad["source_ref"].endswith("manifest.csv:3")
    assert "never closed" in bad["detail"]


def test_a_megabyte_cell_is_one_rejected_record_not_a_dead_dataset(tmp_path):
    fixture = _manifest_text(
        tmp_path,
        f"id,image,text\nr0,r0.png,Clear.\nr1,r1.png,{'x' * 1_000_000}\nr2,r2.png,Clear.\n",
        images=("r0", "r1", "r2"),
    )
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert out.summary.read == 3 and set(out.rows) == {"r0", "r2"}
    [bad] = out.rejected.values()
    assert bad["source_ref"].endswith("manifest.csv:3") and "field larger than field limit" in bad["detail"]


def test_a_repeated_column_stops_the_dataset_naming_it(tmp_path):
    fixture = _manifest_text(tmp_path, "id,image,text,image\nr0,r0.png,Clear.,r1.png\n")
    with pytest.raises(DataError, match=r"manifest\.csv: row 1: the header repeats the column 'image'"):
        prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})


def test_image_paths_leading_out_of_the_folder_are_rejected_unless_allowed(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    manifest.build(outside, [row(7)])  # a readable image outside the dataset folder
    fixture = manifest.build(
        tmp_path / "mine",
        [row(0), row(1, image="../elsewhere/r7.png"), row(2, image=str(outside / "r7.png")), row(3)],
    )
    (fixture.root / "r3.png").unlink()
    (fixture.root / "r3.png").symlink_to(outside / "r7.png")  # a link out of the folder
    out = prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    assert set(out.rows) == {"r0"}
    assert {k: v["reason"] for k, v in out.rejected.items()} == {
        k: "image outside the dataset folder" for k in ("r1", "r2", "r3")
    }
    assert "allow_outside_paths: true" in out.rejected["r1"]["detail"]
    allowed = prepare(
        tmp_path / "allowed",
        "mine",
        {"source": "manifest", "path": str(fixture.root), "allow_outside_paths": True},
    )
    assert set(allowed.rows) == {"r0", "r1", "r2", "r3"}


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"labels": "nan"}, "invalid label"),
        ({"labels": "Cardiomegaly|NaN"}, "invalid label"),
        ({"id": "r1\nr9"}, "invalid id"),
        ({"text": "Clear lungs.\x00\x00"}, "control characters in text"),
        ({"text": "Clear \x1b[31mlungs"}, "control characters in text"),
    ],
    ids=["nan", "nan-among-labels", "newline-in-id", "nul-in-text", "escape-in-text"],
)
def test_values_an_export_damaged_are_rejected_rows(tmp_path, overrides, reason):
    out = manifest_with(tmp_path, [row(0), row(1, **overrides)])
    assert set(out.rows) == {"r0"} and [r["reason"] for r in out.rejected.values()] == [reason]


def test_a_dataset_with_every_row_rejected_leaves_the_reasons_where_the_message_says(tmp_path):
    fixture = manifest.build(tmp_path / "mine", [row(0, text=""), row(1, text=" ")])
    with pytest.raises(
        MedlensError,
        match=r"no usable records out of 2 .*see (\S+mine\.rejected\.failed\.csv) for "
        r"each row's reason",
    ) as err:
        prepare(tmp_path, "mine", {"source": "manifest", "path": str(fixture.root)})
    failed = tmp_path / "out" / "mine.rejected.failed.csv"
    assert str(failed) in str(err.value) and failed.read_text().count("empty text") == 2
    assert not (tmp_path / "out" / "mine.parquet").exists()
