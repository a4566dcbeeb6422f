import math

import pytest

from medlens.config import EncoderConfig
from medlens.train.schedules import lr_at, warmup_steps


def test_warmup_rises_linearly_then_cosine_decays_to_zero():
    cfg = EncoderConfig(learning_rate=1e-3, warmup_steps=10, lr_scheduler_type="cosine")
    lrs = [lr_at(s, cfg, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert lrs[60] == pytest.approx(0.5e-3)  # half way through the decay: half the peak
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-6


def test_warmup_ratio_is_used_when_steps_unset_and_constant_schedule_stays():
    cfg = EncoderConfig(learning_rate=2e-4, warmup_steps=None, warmup_ratio=0.1, lr_scheduler_type="constant")
    assert warmup_steps(cfg, 600) == 60
    assert lr_at(59, cfg, 600) == pytest.approx(2e-4)
    assert lr_at(599, cfg, 600) == pytest.approx(2e-4)
    assert math.isclose(lr_at(29, cfg, 600), 1e-4)
