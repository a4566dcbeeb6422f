"""Hub artefacts fetched before the GPU jobs: what each seed needs, and fetching against a stand-in hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.stand_in_hub import StandInHub
from helpers.vlm import save_tiny_paligemma
from medlens.config import load_experiment
from medlens.models.prefetch import hub_artefacts, needs_prefetch

SEED_ARTEFACTS = {  # experiment -> (config key, Hub repository) its stages load
    "demo": [],
    "hybrid_dinov3_clip": [
        ("encoder.pretrained_image", "timm/vit_base_patch16_dinov3.lvd1689m"),
        ("encoder.pretrained_text", "timm/vit_base_patch32_clip_224.openai"),
    ],
    "siglip_base": [("encoder.pretrained", "timm/ViT-B-16-SigLIP")],
    "llama32_vision": [
        ("encoder.pretrained", "timm/ViT-B-16-SigLIP"),
        ("decoder.model", "meta-llama/Llama-3.2-11B-Vision-Instruct"),
    ],
    "paligemma_qlora": [("decoder.model", "google/paligemma-3b-pt-224")],
    "lapvqa_captioner": [("decoder.tokenizer", "gpt2")],  # optional: the captioner falls back to its own BPE
}


@pytest.mark.parametrize("name", SEED_ARTEFACTS)
def test_each_experiment_names_the_hub_repositories_its_stages_load(repo, name):
    exp = load_experiment(repo / "config" / "experiments" / f"{name}.yaml")
    artefacts = hub_artefacts(exp.stages, exp.encoder, exp.decoder)
    assert [(a.key, a.repo_id) for a in artefacts] == SEED_ARTEFACTS[name]
    assert needs_prefetch(exp) == bool(SEED_ARTEFACTS[name])
    assert all(a.optional == (a.key == "decoder.tokenizer") for a in artefacts)


def _prefetch(hub, home, decoder, encoder=None, offline=False):
    """prefetch_experiment in a subprocess: huggingface_hub reads HF_ENDPOINT and HF_HOME when imported."""
    params = {
        "stages": ["decoder"] if encoder is None else ["encoder", "decoder"],
        "encoder": encoder or {},
        "decoder": decoder,
    }
    code = (
        "import json, sys; from medlens.log import setup_logging; setup_logging(None);"
        "from medlens.models.prefetch import prefetch_experiment;"
        f"prefetch_experiment(json.loads(sys.argv[1]), sys.argv[2], offline={offline})"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1" if offline else "0",
    }
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(params), str(home / "prefetched.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tiny_vlm(tmp_path):
    return save_tiny_paligemma(tmp_path / "repo", ["Describe this medical image:", "No effusion."] * 5)


def test_a_prefetched_model_then_loads_with_the_hub_offline(tmp_path, tiny_vlm):
    home = tmp_path / "hf"
    (tiny_vlm / "pytorch_model.bin").write_bytes(b"the same weights as a pickle")  # as many repos hold
    with StandInHub({"medlens-test/tiny-paligemma": tiny_vlm}) as hub:
        proc = _prefetch(hub, home, {"kind": "vlm", "model": "medlens-test/tiny-paligemma"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert any(r.startswith("GET /medlens-test/tiny-paligemma/resolve/") for r in hub.requests)
        # transformers loads the safetensors: the pickled copy is not downloaded
        assert not any("pytorch_model.bin" in r for r in hub.requests), hub.requests
    [record] = json.loads((home / "prefetched.json").read_text())
    assert (
        record["key"] == "decoder.model" and (home / "hub").is_dir() and record["path"].startswith(str(home))
    )
    # what a GPU job does: the hub offline (and gone), the model from the cache
    code = (
        "from transformers import AutoModelForImageTextToText as M, AutoProcessor as P;"
        "M.from_pretrained('medlens-test/tiny-paligemma'); P.from_pretrained('medlens-test/tiny-paligemma');"
        "print('loaded')"
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "loaded", out.stderr[-2000:]
    # a workflow its user runs offline checks the cache instead of going online
    with StandInHub({}) as hub:
        assert (
            _prefetch(
                hub, home, {"kind": "vlm", "model": "medlens-test/tiny-paligemma"}, offline=True
            ).returncode
            == 0
        )
        assert hub.requests == []
    # a host without the Hub that did not set HF_HUB_OFFLINE (a SLURM test's, a cluster's): the cache decides
    proc = _prefetch(hub, home, {"kind": "vlm", "model": "medlens-test/tiny-paligemma"})
    assert proc.returncode == 0 and "the Hub cannot list its files" in proc.stderr, proc.stderr[-3000:]
    [record] = json.loads((home / "prefetched.json").read_text())
    assert record["path"].startswith(str(home))
    # a Hub that refuses (here: the licence no longer accepted, as with an expired token): the cache decides
    with StandInHub({"medlens-test/tiny-paligemma": tiny_vlm}, gated={"medlens-test/tiny-paligemma"}) as hub:
        proc = _prefetch(hub, home, {"kind": "vlm", "model": "medlens-test/tiny-paligemma"})
    assert proc.returncode == 0 and "the Hub cannot list its files" in proc.stderr, proc.stderr[-3000:]


def test_a_gated_or_missing_model_fails_the_prefetch_at_once_with_what_to_do(tmp_path, tiny_vlm):
    with StandInHub({"meta-llama/tiny": tiny_vlm}, gated={"meta-llama/tiny"}) as hub:
        proc = _prefetch(hub, tmp_path / "hf", {"kind": "vlm", "model": "meta-llama/tiny"})
        assert proc.returncode != 0
        assert (
            "decoder.model: 'meta-llama/tiny' is gated and this account may not download it yet; expected the "
            "licence accepted at https://huggingface.co/meta-llama/tiny"
        ) in proc.stderr
        proc = _prefetch(hub, tmp_path / "hf", {"kind": "vlm", "model": "medlens-test/no-such-model"})
        assert (
            "decoder.model: no Hub repository 'medlens-test/no-such-model' (or it is private)" in proc.stderr
        )
    assert not (tmp_path / "hf" / "prefetched.json").exists()


def test_an_optional_artefact_that_cannot_be_fetched_is_recorded_as_missing(tmp_path):
    with StandInHub({}) as hub:
        proc = _prefetch(hub, tmp_path / "hf", {"kind": "captioner", "tokenizer": "gpt2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    [record] = json.loads((tmp_path / "hf" / "prefetched.json").read_text())
    assert record["repo_id"] == "gpt2" and "missing" in record and "its stage falls back" in proc.stderr


def test_a_repository_with_only_pickled_weights_gets_them(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text("{}")
    (repo / "pytorch_model.bin").write_bytes(b"weights")
    code = (
        "import sys; from medlens.models.prefetch import HubArtefact, fetch_artefact;"
        "print(sorted(p.name for p in fetch_artefact(HubArtefact('org/old', 'k'), offline=False).iterdir()))"
    )
    with StandInHub({"org/old": repo}) as hub:
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.stdout.strip() == "['config.json', 'pytorch_model.bin']", out.stderr[-2000:]
    # offline (a GPU job), found in the cache; its weights lost (an interrupted download), not found
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    find = code.replace("offline=False", "offline=True")
    out = subprocess.run(
        [sys.executable, "-c", find], env=offline, capture_output=True, text=True, timeout=300
    )
    assert out.stdout.strip() == "['config.json', 'pytorch_model.bin']", out.stderr[-2000:]
    next((tmp_path / "hf" / "hub").glob("models--org--old/snapshots/*/pytorch_model.bin")).unlink()
    out = subprocess.run(
        [sys.executable, "-c", find], env=offline, capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0 and "pytorch_model.bin" in out.stderr, out.stderr[-2000:]
