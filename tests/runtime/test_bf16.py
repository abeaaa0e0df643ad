"""--bf16 trains in bfloat16 on CPU (and CUDA), not on a TPU; the criterions never wait for the device.

The end-to-end runs are real ``fairseq-train --cpu --bf16`` processes of the three training tasks. What
they check: the loss falls; the log has our "--bf16: training in torch.bfloat16 on cpu" line, no
TPU/XLA line and no loss scale; every weight in the checkpoint is exactly a bfloat16 value (fairseq
saves float32 copies of the bf16 parameters the model trained with, so its activations were bf16
too) while the Adam moments are float32 (FP16Optimizer's float32 master copy); and
``fairseq-ext export-hf`` of that checkpoint passes its parity check.
"""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest
import torch
from fairseq.data import Dictionary

from conftest import run_cli
from fairseq_ext import runtime
from fairseq_ext.criterions.cross_entropy_with_accuracy import CrossEntropyWithAccuracy
from fairseq_ext.criterions.masked_lm_with_accuracy import MaskedLMWithAccuracy, MaskedLMWithAccuracyConfig
from fairseq_ext.runtime import precision
from fairseq_ext.runtime.patching import patched
from fairseq_ext.serialization import safe_torch_load
from support.code_data import make_code_dataset
from support.host_sync import NoHostSync
from support.tiny import RUNS
from support.training import fairseq_train

# --- unit: the --bf16 / --tpu untangling -------------------------------------------------------------


def parsed(argv):
    """The config fairseq-train hands to call_main for this command line."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


ARGV = ["data", "--task", "masked_lm", "--arch", "roberta_base", "--optimizer", "adam", "--criterion",
        "masked_lm", "--cpu"]


def test_bf16_no_longer_implies_tpu_in_any_config_group():
    argv = [*ARGV, "--bf16"]
    cfg = parsed(argv)
    assert cfg.common.tpu and cfg.distributed_training.tpu and cfg.criterion.tpu  # fairseq: --bf16 => --tpu
    assert precision.bf16_implied_tpu(argv)
    precision.untie_bf16_from_tpu(cfg)
    assert cfg.common.bf16 and not cfg.common.fp16
    assert [g for g in cfg if hasattr(cfg[g], "keys") and cfg[g].get("tpu")] == []
    assert cfg.model.tpu is False  # roberta: the model group is fairseq's argument namespace


@pytest.mark.parametrize("argv,kept", [
    ([*ARGV, "--bf16", "--tpu"], "tpu"),
    ([*ARGV, "--fp16"], "fp16"),
    ([*ARGV, "--memory-efficient-bf16"], None),
])
def test_call_main_unties_only_what_fairseq_implied(monkeypatch, argv, kept):
    from fairseq.distributed import utils as distributed_utils

    cfg = parsed(argv)
    monkeypatch.setattr(sys, "argv", ["fairseq-train", *argv])
    seen = []
    distributed_utils.call_main(cfg, seen.append)  # one process: runs main(cfg) here
    (cfg,) = seen
    assert cfg.common.tpu == cfg.distributed_training.tpu == (kept == "tpu")
    assert cfg.common.fp16 == (kept == "fp16") and cfg.common.bf16 == (kept != "fp16")


def test_install_wraps_call_main_once():
    from fairseq.distributed import utils as distributed_utils

    wrapped = distributed_utils.call_main
    assert patched(wrapped) == "fairseq.distributed.utils:call_main"  # installed by importing fairseq_ext
    runtime.install(training=False)
    assert distributed_utils.call_main is wrapped
    assert patched(wrapped.__wrapped__) is None  # one wrapper: bf16 untied, then the launcher's set-up


# --- unit: no host-device synchronisation in the criterions' forward ---------------------------------


class TinyLM(torch.nn.Module):
    """Logits from an embedding; projects only ``masked_tokens`` positions when given, like RoBERTa."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)

    def forward(self, src_tokens, masked_tokens=None, **_):
        x = self.embed(src_tokens)  # (B, T, V)
        return (x if masked_tokens is None else x[masked_tokens]), {}

    def get_targets(self, sample, net_output):
        return sample["target"]

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return torch.log_softmax(net_output[0].float(), dim=-1)


@pytest.fixture
def task():
    d = Dictionary()
    for i in range(12):
        d.add_symbol(f"w{i}")
    return SimpleNamespace(target_dictionary=d, source_dictionary=d)


def batch(task, masked: bool):
    pad = task.target_dictionary.pad()
    src = torch.tensor([[5, 6, 7, 8], [9, 10, pad, pad]])
    target = torch.full_like(src, pad)
    if masked:
        target[0, 1], target[1, 0], target[0, 3] = 6, 9, 11
    return {"net_input": {"src_tokens": src}, "target": target, "ntokens": 6, "nsentences": 2}


@pytest.mark.parametrize("masked", [True, False])
def test_masked_lm_forward_does_not_sync(task, masked):
    torch.manual_seed(0)
    model, crit = TinyLM(len(task.target_dictionary)), MaskedLMWithAccuracy(MaskedLMWithAccuracyConfig(), task)
    sample = batch(task, masked)
    with NoHostSync():
        loss, sample_size, log = crit(model, sample)
    logits = model.embed.weight[sample["net_input"]["src_tokens"]]  # (B, T, V)
    keep = sample["target"].ne(task.target_dictionary.pad())
    expected = torch.nn.functional.cross_entropy(logits[keep], sample["target"][keep], reduction="sum")
    assert torch.is_tensor(sample_size) and int(sample_size) == int(keep.sum()) == (3 if masked else 0)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)  # 0 when nothing is masked
    assert int(log["total"]) == int(keep.sum())
    assert int(log["n_correct"]) == int(logits.argmax(-1).eq(sample["target"])[keep].sum())


def test_cross_entropy_forward_does_not_sync(task):
    torch.manual_seed(0)
    model, crit = TinyLM(len(task.target_dictionary)), CrossEntropyWithAccuracy(task, sentence_avg=False)
    sample = batch(task, masked=True)
    sample["target"] = sample["net_input"]["src_tokens"]  # denoising: every non-pad token is a target
    with NoHostSync():
        _loss, sample_size, log = crit(model, sample)
    keep = sample["target"].ne(task.target_dictionary.pad())
    argmax = model.embed.weight[sample["target"]].argmax(-1)
    assert sample_size == 6 and int(log["total"]) == 6
    assert int(log["n_correct"]) == int(argmax.eq(sample["target"])[keep].sum())


def test_accuracy_is_reduced_from_tensor_counts():
    from fairseq import metrics

    logs = [{"loss": torch.tensor(4.0), "ntokens": 6, "nsentences": 2, "sample_size": torch.tensor(3),
             "n_correct": torch.tensor(2), "total": torch.tensor(3)},
            {"loss": torch.tensor(0.0), "ntokens": 6, "nsentences": 2, "sample_size": torch.tensor(0),
             "n_correct": torch.tensor(0), "total": torch.tensor(0)}]  # nothing masked in the 2nd batch
    with metrics.aggregate() as agg:
        MaskedLMWithAccuracy.reduce_metrics(logs)
    values = agg.get_smoothed_values()
    assert values["accuracy"] == pytest.approx(0.6667)
    assert values["total"] == 3.0 and type(values["total"]) is float  # a number in the log, not a tensor


# --- end to end: fairseq-train --cpu --bf16 -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task_name", list(RUNS))
def test_bf16_trains_on_cpu_and_exports(task_name, text_data, tmp_path, bpe_dir):
    data = text_data
    if task_name == "code_mlm":
        data = tmp_path / "code"
        make_code_dataset(data, bpe_dir)
    run = fairseq_train(data, "--user-dir", "fairseq_ext", "--task", task_name, *RUNS[task_name], "--bf16", "--cpu",
                        "--tokens-per-sample", "64", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024",
                        "--max-update", "20", "--num-workers", "0", "--log-interval", "5",
                        "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--seed", "1", console_script=False)
    log = run.text
    assert "--bf16: training in torch.bfloat16 on cpu, not on a TPU" in log
    assert "'tpu': False" in log  # the config fairseq-train prints
    rest = log.replace("not on a TPU (pass --tpu for a TPU)", "").replace("'tpu': False", "").replace("tpu=False", "")
    rest = rest.replace("devices (GPUs/TPUs)", "")  # fairseq's fixed wording
    tpu = re.search(r"\btpus?\b|\bxla|_xla", rest, re.I)  # TPU, torch_xla; not outpu(t)
    assert tpu is None, rest[max(0, tpu.start() - 80): tpu.end() + 40]
    losses = run.train_losses
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    assert run.valid and "accuracy" in run.valid[-1]

    assert not any("loss_scale" in r for r in run.of("train_inner"))  # bf16: FP16Optimizer without a loss scaler

    # fairseq saves weights as float32 (utils.move_to_cpu); every value being exactly a bfloat16 shows the
    # model held bf16 parameters while it trained, and so computed bf16 activations. The Adam moments
    # belong to FP16Optimizer's float32 master copy: float32 values that bf16 cannot hold.
    checkpoint = tmp_path / "ckpt" / "checkpoint_last.pt"
    state = safe_torch_load(checkpoint, map_location="cpu")
    weights = torch.cat([v.flatten() for v in state["model"].values() if v.is_floating_point()])
    assert weights.numel() > 10_000 and torch.equal(weights.to(torch.bfloat16).float(), weights)
    moments = torch.cat([s["exp_avg"].flatten() for s in state["last_optimizer_state"]["state"].values()])
    assert moments.dtype == torch.float32 and not torch.equal(moments.to(torch.bfloat16).float(), moments)
    assert state["cfg"]["common"]["bf16"] and not state["cfg"]["common"]["tpu"]

    proc = run_cli("export-hf", str(checkpoint), "-o", str(tmp_path / "hf"))
    assert "parity: max |" in proc.stdout, proc.stdout
