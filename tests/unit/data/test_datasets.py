import numpy as np
import pytest
import torch

from helpers.pairs import write_pairs
from medlens.data.datasets import PairsDataset, StepBatchSampler
from medlens.data.laterality import mirror_laterality
from medlens.data.mapped import map_split
from medlens.errors import DataError


def _to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32))


def test_flipped_images_come_with_swapped_text(tmp_path):
    mapped = map_split(write_pairs(tmp_path / "p.parquet", n=40), "train", tmp_path / "mapped")
    flips = PairsDataset(mapped, _to_tensor, hflip=True)
    plain = PairsDataset(mapped, flips.transform)
    flipped = 0
    for i in range(len(flips)):
        (a, ta), (b, tb) = flips[(i, 1000 + i)], plain[i]
        if torch.equal(a, b):
            assert ta == tb
        else:
            flipped += 1
            assert torch.equal(a, b.flip(1)) and ta == mirror_laterality(tb)
    assert 0 < flipped < len(flips)


def test_batches_are_a_function_of_seed_and_step_and_resume_continues_them():
    full = list(StepBatchSampler(50, 8, steps=10, accum_steps=2, seed=1))
    resumed = list(StepBatchSampler(50, 8, steps=10, accum_steps=2, seed=1, start_step=4))
    assert len(full) == 20 and resumed == full[8:]
    assert full != list(StepBatchSampler(50, 8, steps=10, accum_steps=2, seed=2))
    epoch0 = [i for batch in full[:6] for i, _ in batch]  # 50 // 8 = 6 full batches per epoch
    assert len(set(epoch0)) == 48


def test_ranks_split_each_global_batch_and_together_cover_the_single_process_batch():
    single = list(StepBatchSampler(64, 8, steps=3, seed=0, world_size=1))
    r0 = list(StepBatchSampler(64, 4, steps=3, seed=0, rank=0, world_size=2))
    r1 = list(StepBatchSampler(64, 4, steps=3, seed=0, rank=1, world_size=2))
    for s, a, b in zip(single, r0, r1, strict=True):
        assert s == a + b


def test_sampler_refuses_a_dataset_smaller_than_one_batch():
    with pytest.raises(DataError, match="lower encoder.per_device_train_batch_size"):
        StepBatchSampler(5, 8, steps=1)


def test_empty_split_is_an_error(tmp_path):
    mapped = map_split(write_pairs(tmp_path / "p.parquet", n=10), "nonexistent", tmp_path / "mapped")
    with pytest.raises(DataError, match="no rows") as info:
        PairsDataset(mapped, lambda im: im)
    assert "nonexistent.arrow" in str(info.value)


REPORT = "FINDINGS: Small left pleural effusion. Heart size is normal. IMPRESSION: Left pleural effusion."


def test_sentences_are_split_without_section_headers():
    from medlens.data.datasets import split_sentences

    assert split_sentences(REPORT) == [
        "Small left pleural effusion.",
        "Heart size is normal.",
        "Left pleural effusion.",
    ]


def test_text_sampling_modes_draw_sentences_reproducibly():
    from medlens.data.datasets import sample_text, split_sentences

    sentences = split_sentences(REPORT)
    assert sample_text(REPORT, "full") == REPORT
    draws = {sample_text(REPORT, "sentence", torch.Generator().manual_seed(s)) for s in range(40)}
    assert draws == set(sentences)
    for seed in range(40):
        subset = sample_text(REPORT, "sentences", torch.Generator().manual_seed(seed))
        kept = split_sentences(subset)
        assert kept and all(k in sentences for k in kept)
        assert kept == [s for s in sentences if s in kept]  # order kept
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert sample_text(REPORT, "sentences", g1) == sample_text(REPORT, "sentences", g2)
    assert sample_text("One sentence only", "sentence") == "One sentence only"
