"""Resume checkpoints are data (safetensors + JSON): exact round trips, no code, and the config they belong to."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from medlens.errors import MedlensError
from medlens.train.checkpoint import (
    TrainState,
    checkpoint_config_diff,
    from_tensors,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    to_tensors,
)


class _Boom:
    """Unpickling this runs code: it writes a file (what an attacker with write access to results/ plants)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_and_rng_states_round_trip_exactly():
    _, optimizer = _model_and_optimizer()
    state = {
        "optimizer": optimizer.state_dict(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(to_tensors(state, tensors)))  # what state.json holds
    back = from_tensors(skeleton, tensors)
    assert back["python"] == state["python"]
    assert back["numpy"][0] == "MT19937" and back["numpy"][1].dtype == np.uint32
    assert np.array_equal(back["numpy"][1], state["numpy"][1]) and back["numpy"][2:] == state["numpy"][2:]
    assert torch.equal(back["torch"], state["torch"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # betas stay a tuple
    for pid, entry in state["optimizer"]["state"].items():  # int keys survive JSON
        for name, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][pid][name], value)


def test_a_saved_checkpoint_resumes_weights_optimizer_and_random_streams(tmp_path):
    model, optimizer = _model_and_optimizer()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    save_checkpoint(
        tmp_path / "last",
        model=model,
        optimizer=optimizer,
        state=TrainState(step=7, samples_seen=56),
        config={"seed": 3, "lr": 0.01},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1))
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == [
        "model.safetensors",
        "state.json",
        "state.safetensors",
    ]
    fresh, fresh_opt = _model_and_optimizer(seed=1)
    state = load_checkpoint(tmp_path / "last", model=fresh, optimizer=fresh_opt)
    assert state == TrainState(step=7, samples_seen=56)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert str(fresh_opt.state_dict()) == str(optimizer.state_dict())


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    model, optimizer = _model_and_optimizer()
    save_checkpoint(tmp_path / "last", model=model, optimizer=optimizer, state=TrainState(), config={})
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(marker))
    (tmp_path / "last.pt").write_bytes(payload)  # the old resume file's name
    (tmp_path / "last" / "state.safetensors").write_bytes(payload)
    with pytest.raises(
        MedlensError, match=r"last: cannot resume from this checkpoint .*delete .* to start over"
    ):
        load_checkpoint(tmp_path / "last", model=model, optimizer=optimizer)
    assert not marker.exists()


def test_the_config_a_checkpoint_belongs_to_is_compared_key_by_key(tmp_path):
    model, optimizer = _model_and_optimizer()
    config = {"seed": 3, "lr": 0.01, "loss": {"kind": "clip"}}
    save_checkpoint(tmp_path / "last", model=model, optimizer=optimizer, state=TrainState(), config=config)
    info = read_checkpoint_info(tmp_path / "last")
    assert checkpoint_config_diff(info, config) == []
    assert checkpoint_config_diff(info, {**config, "lr": 0.02, "loss": {"kind": "siglip"}}) == [
        "loss.kind",
        "lr",
    ]
    assert checkpoint_config_diff(info, {"seed": 3, "lr": 0.01}) == ["loss.kind"]
    assert read_checkpoint_info(tmp_path / "none") is None


def test_a_kill_while_replacing_the_checkpoint_leaves_the_previous_one_readable(tmp_path):
    model, optimizer = _model_and_optimizer()
    save_checkpoint(tmp_path / "last", model=model, optimizer=optimizer, state=TrainState(step=4), config={})
    (tmp_path / "last").rename(tmp_path / ".last.old-999999999")  # atomic_dir had moved it aside, then died
    assert load_checkpoint(tmp_path / "last", model=model, optimizer=optimizer).step == 4
