"""What each report-generation metric loads from the Hugging Face Hub, fetched by ``prefetch_metric_weights``
on the submit host and looked up offline by ``score_reports``."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.models.prefetch import HubArtefact, fetch_and_record, fetch_artefact

__all__ = [
    "CHEXBERT",
    "RADGRAPH",
    "Weights",
    "artefact",
    "metric_artefacts",
    "metric_weights",
    "missing_weights",
    "prefetch_metrics",
    "radgraph_encoders",
    "unpack_radgraph",
]


@dataclass(frozen=True)
class Weights:
    """One Hub artefact a metric loads: a file of a repository, or the whole repository."""

    repo_id: str
    filename: str | None = None  # None: the repository's snapshot
    cache: str | None = None  # "radgraph": the radgraph package's own cache folder, else the standard cache

    def describe(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


CHEXBERT = Weights("StanfordAIMI/RRG_scorers", "chexbert.pth")
_BERT = Weights("bert-base-uncased")  # CheXbert's tokenizer
_DISTILROBERTA = Weights("distilroberta-base")
_RADGRAPH_XL = Weights("StanfordAIMI/RRG_scorers", "radgraph-xl.tar.gz", cache="radgraph")
RADGRAPH = Weights("StanfordAIMI/RRG_scorers", "radgraph.tar.gz", cache="radgraph")
_NEEDS = {
    "bertscore": (_DISTILROBERTA,),
    "chexbert": (CHEXBERT, _BERT),
    "sembscore": (CHEXBERT, _BERT),
    "radgraph": (_RADGRAPH_XL,),
    "radcliq": (RADGRAPH, _DISTILROBERTA, CHEXBERT, _BERT),
    "ratescore": (Weights("Angelakeke/RaTE-NER-Deberta"), Weights("FremyCompany/BioLORD-2023-C")),
    "green": (Weights("StanfordAIMI/GREEN-radllama2-7b"),),
}


def metric_weights(names: Sequence[str]) -> list[Weights]:
    """What the named metrics load from the Hub (each once), without the BERT a RadGraph archive names
    (:func:`radgraph_encoders` reads it from the archive once fetched)."""
    return list(dict.fromkeys(w for n in names for w in _NEEDS[n]))


def artefact(w: Weights) -> HubArtefact:
    """``w`` as the prefetch fetches it: optional (a metric without it is not computed)."""
    if w.cache != "radgraph":
        return HubArtefact(w.repo_id, "evaluate.report_metrics", True, w.filename)
    from medlens.evaluate.radeval_compat import vendored_radgraph

    # where RadGraph(...) looks for its archive (per RadGraph version); the archive names a BERT to fetch too
    return HubArtefact(
        w.repo_id,
        "evaluate.report_metrics",
        True,
        w.filename,
        vendored_radgraph().CACHE_DIR,
        radgraph_encoders,
    )


def metric_artefacts(names: Sequence[str]) -> list[HubArtefact]:
    """The Hub artefacts the named metrics load, each once, for the prefetch."""
    return [artefact(w) for w in metric_weights(names)]


def prefetch_metrics(names: list[str], out_json: str, *, offline: bool = False) -> list[dict[str, Any]]:
    """The ``prefetch_metric_weights`` rule: fetch the named metrics' weights and record each (``missing``
    with the reason for one that could not be fetched). A rule apart from ``prefetch_weights``, so that
    changing the metrics reruns their scoring, not the training."""
    return fetch_and_record(metric_artefacts(names), out_json, offline)


def radgraph_encoders(archive: str | Path) -> list[HubArtefact]:
    """The BERT(s) a RadGraph archive's ``config.json`` names (its tokenizer and embedder, loaded by name)."""
    with tarfile.open(archive, "r:gz") as tar:
        member = next(m for m in tar.getmembers() if Path(m.name).name == "config.json")
        config = json.load(tar.extractfile(member))
    names = {
        config["dataset_reader"]["token_indexers"]["bert"]["model_name"],
        config["model"]["embedder"]["token_embedders"]["bert"]["model_name"],
    }
    return [HubArtefact(n, "evaluate.report_metrics", True) for n in sorted(names) if not Path(n).exists()]


def unpack_radgraph(model_type: str) -> None:
    """Unpack the cached RadGraph archive of ``model_type`` into the folder RadGraph reads, unless it is there.

    RadGraph unpacks its archive itself with ``extractall`` and no filter, which writes wherever an entry's
    path points (``../``, absolute paths, links); tarfile's ``data`` filter refuses those. RadGraph then
    finds the folder filled and does not unpack again. Unpacked under a temporary name first, so a killed
    job never leaves a half-filled folder that RadGraph would take as complete.

    Raises:
        MetricNotComputed: the archive holds an entry the filter refuses, or is damaged.
    """
    from medlens.errors import MetricNotComputed
    from medlens.evaluate.radeval_compat import vendored_radgraph

    core = vendored_radgraph()
    folder = Path(core.CACHE_DIR) / model_type
    if folder.is_dir() and any(folder.iterdir()):
        return
    archive = fetch_artefact(
        artefact(Weights("StanfordAIMI/RRG_scorers", core.MODEL_MAPPING[model_type], cache="radgraph")),
        offline=True,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_type}.partial-", dir=folder.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared cache from the other users
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if folder.is_dir():  # the empty folder a failed RadGraph(...) call made
            folder.rmdir()
        os.replace(tmp, folder)
    except tarfile.FilterError as e:
        raise MetricNotComputed(
            f"{archive}: the RadGraph archive holds an entry that would be written outside its folder or as a "
            f"link or device ({e}); delete it and fetch it again"
        ) from e
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise MetricNotComputed(
            f"{archive}: the RadGraph archive is damaged ({e}); delete it and fetch it again"
        ) from e
    except OSError:
        if not (folder.is_dir() and any(folder.iterdir())):
            raise
        # another job (two experiments scored at once) unpacked it first: theirs is the same archive
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def missing_weights(name: str | Sequence[Weights]) -> list[str]:
    """The artefacts of metric ``name`` (or these weights) not in the cache (checked without the network)."""
    missing, queue = [], [artefact(w) for w in (_NEEDS[name] if isinstance(name, str) else name)]
    while queue:
        a = queue.pop(0)
        try:
            path = fetch_artefact(a, offline=True)
        except Exception:  # noqa: BLE001 - whatever stops finding it locally, it is missing
            missing.append(a.describe())
            continue
        if a.follow is not None:
            queue += a.follow(path)
    return missing
