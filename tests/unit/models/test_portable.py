"""A trained encoder folder, copied anywhere, loads and runs with open_clip alone, as its model card says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.pairs import write_pairs
from helpers.towers import TIMM_TINY
from medlens.config import EncoderConfig
from medlens.models.encoders import load_encoder
from medlens.train.encoder import train_encoder

RUN = (
    "import json, sys, numpy as np, torch\n"
    "from PIL import Image\n"
    "{card}\n"
    "model.eval()\n"
    "image = preprocess(Image.open(sys.argv[1]).convert('RGB')).unsqueeze(0)\n"
    "with torch.no_grad():\n"
    "    img = model.encode_image(image, normalize=True)\n"
    "    txt = model.encode_text(tokenizer(['left pleural effusion']), normalize=True)\n"
    "assert 'medlens' not in sys.modules\n"
    "print(json.dumps({{'image': img[0].tolist(), 'text': txt[0].tolist()}}))\n"
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.parquet", n=60)


@pytest.mark.parametrize("tower", ["open_clip ViT", "timm tower at a non-native size"])
def test_a_copied_encoder_folder_runs_with_open_clip_alone_as_its_card_says(pairs, tmp_path, tower):
    import open_clip

    model = "medlens-tiny"
    if tower.startswith("timm"):
        (tmp_path / "medlens-test-timm-tiny.json").write_text(json.dumps(TIMM_TINY))
        open_clip.add_model_config(tmp_path / "medlens-test-timm-tiny.json")
        model = "medlens-test-timm-tiny"
    cfg = EncoderConfig(
        model=model,
        image_size=32,
        context_length=24,
        per_device_train_batch_size=8,
        max_steps=2,
        warmup_steps=1,
        eval_steps=2,
        save_steps=2,
        dataloader_num_workers=0,
    )
    train_encoder(cfg, pairs, tmp_path / "results" / "encoder")
    folder = tmp_path / "shared" / "my-encoder"  # away from results/: nothing around it
    shutil.copytree(tmp_path / "results" / "encoder", folder)
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(card=code), str(image)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stock = json.loads(proc.stdout.strip().splitlines()[-1])
    enc = load_encoder(folder)  # medlens's own loader gives the same features
    ours_image = enc.encode_images([Image.open(image).convert("RGB")])[0]
    ours_text = enc.encode_texts(["left pleural effusion"])[0]
    torch.testing.assert_close(torch.tensor(stock["image"]), ours_image.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(stock["text"]), ours_text.float(), atol=1e-5, rtol=1e-4)
