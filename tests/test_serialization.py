"""fairseq checkpoints load under torch >= 2.6 with weights_only kept on."""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils
from omegaconf import OmegaConf

from fairseq_ext.serialization import CheckpointRefusedError, safe_torch_load
from support.payload import Payload


def fairseq_like_state(cfg) -> dict:
    return {
        "args": None,
        "cfg": cfg,
        "model": {"w": torch.ones(2, 3)},
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {"best": np.float64(1.5)}, "num_updates": 7}],
        "extra_state": {"best": np.float64(1.5), "val_loss": np.float32(2.0), "epoch": np.int64(3),
                        "train_iterator": {"epoch": 1, "iterations_in_epoch": 7}},
        "last_optimizer_state": {"state": {}, "param_groups": [{"lr": 0.1}]},
    }


def test_plain_torch_load_refuses_fairseq_state(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(fairseq_like_state({"common": {"seed": 1}}), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # the problem this module solves


@pytest.mark.parametrize("cfg_kind", ["dict", "dictconfig"])
def test_fairseq_checkpoint_state_loads(tmp_path, cfg_kind):
    cfg = {"common": {"seed": 1, "fp16": False}, "model": {"_name": "bart_base", "dropout": 0.1}}
    if cfg_kind == "dictconfig":  # as other fairseq releases saved it
        cfg = OmegaConf.create(cfg)
    else:  # as fairseq 0.12 saves it: the model's legacy args as a Namespace
        cfg["model"] = argparse.Namespace(_name="bart_base", dropout=0.1, arch="bart_base")
    path = tmp_path / "ckpt.pt"
    torch.save(fairseq_like_state(cfg), path)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["optimizer_history"][-1]["num_updates"] == 7
    assert state["extra_state"]["best"] == 1.5
    assert torch.equal(state["model"]["w"], torch.ones(2, 3))
    assert state["cfg"].model.dropout == 0.1


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "pwned"
    state = fairseq_like_state({"common": {}})
    state["extra_state"]["evil"] = Payload(str(target))
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointRefusedError, match=r"evil.pt: refused to load checkpoint: .*mkdir"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    with pytest.raises(CheckpointRefusedError):
        with open(path, "rb") as f:
            safe_torch_load(f, map_location="cpu")
    assert not target.exists()


def test_weights_only_cannot_be_turned_off_through_fairseq(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload(str(target))}, path)
    with pytest.raises(CheckpointRefusedError):
        checkpoint_utils.torch.load(str(path), map_location="cpu", weights_only=False)
    assert not target.exists()
