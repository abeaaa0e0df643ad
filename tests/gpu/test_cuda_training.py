"""On a GPU: what benchmarks/gpu_check.py checks, as tests. Every task trains a few updates in each of fairseq's
precisions (--fp16, what V100 users run; --bf16; --amp) on CUDA with every loss finite, saves weights held in the
precision's dtype, resumes from checkpoint_last.pt, and exports to transformers with its parity check passed;
code_contrastive's gradient caching (whose replay re-enters the first pass's autocast) trains under --amp and
--fp16 too.

Skipped where CUDA is absent, one summary line per test function (CI has no GPU): `bash scripts/gpu_check.sh`
runs the same checks at full size, and tests/gpu/test_gpu_check.py rehearses the script's logic on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import run_cli
from fairseq_ext.serialization import safe_torch_load
from support.code_data import make_code_dataset
from support.pairs import small_pairs
from support.tiny import RUNS, T5
from support.training import fairseq_train

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: fp16/bf16/amp training on a GPU")]

PRECISIONS = ["fp16", "bf16", "amp"]
CONTRASTIVE = [*T5, "--criterion", "info_nce", "--symmetric", "--max-query-tokens", "32", "--max-key-tokens", "64"]
TASKS = {**RUNS, "code_contrastive": CONTRASTIVE}
EXACT = {"fp16": torch.float16, "bf16": torch.bfloat16}  # amp keeps float32 weights


@pytest.fixture(scope="module")
def data(text_data, bpe_dir, tmp_path_factory):
    """Each task's data directory: binarized text, a code dataset, (docstring, code) pairs."""
    root = tmp_path_factory.mktemp("gpu-data")
    make_code_dataset(root / "code", bpe_dir)
    pairs = small_pairs(root / "pairs", bpe_dir)
    return {"hf_masked_lm": text_data, "hf_denoising": text_data, "code_mlm": root / "code", "code_contrastive": pairs}


def train(data, task: str, precision: str, save, *extra: str, updates: int = 8):
    return fairseq_train(data[task], "--user-dir", "fairseq_ext", "--task", task, *TASKS[task], f"--{precision}",
                         *(["--tokens-per-sample", "64"] if task != "code_contrastive" else []),
                         "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "2048", "--max-update", str(updates),
                         "--num-workers", "0", "--log-interval", "1", "--seed", "1", "--save-dir", save,
                         "--no-epoch-checkpoints", "--disable-validation", *extra, console_script=False)


def saved_weights(checkpoint):
    state = safe_torch_load(checkpoint, map_location="cpu")
    return torch.cat([v.flatten() for v in state["model"].values() if v.is_floating_point()])


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_trains_resumes_and_exports_in_each_precision_on_cuda(data, task, precision, tmp_path):
    run = train(data, task, precision, tmp_path / "ckpt")
    assert "CUDA enviroments for all 1 workers" in run.text  # fairseq's spelling: it trained on the GPU
    losses = run.train_losses
    assert len(losses) >= 6 and all(math.isfinite(x) for x in losses), losses
    scales = run.values("train_inner", "loss_scale")
    assert bool(scales) == (precision != "bf16")  # fp16/amp: a loss scaler; bf16: none
    weights = saved_weights(tmp_path / "ckpt" / "checkpoint_last.pt")
    if precision in EXACT:  # fairseq saves float32 copies of the half parameters it trained
        assert torch.equal(weights.to(EXACT[precision]).float(), weights)
    else:
        assert not torch.equal(weights.to(torch.bfloat16).float(), weights)
    # the same command further: the optimizer's state (fp16: its loss scale, amp: its GradScaler) comes back
    resumed = train(data, task, precision, tmp_path / "ckpt", updates=10)
    assert "checkpoint_last.pt (epoch" in resumed.text and "@ 8 updates)" in resumed.text, resumed.text[-3000:]
    assert resumed.updates[0] == 9 and resumed.updates[-1] == 10
    assert all(math.isfinite(x) for x in resumed.train_losses), resumed.train_losses
    proc = run_cli("export-hf", str(tmp_path / "ckpt" / "checkpoint_last.pt"), "-o", str(tmp_path / "hf"))
    assert "fairseq vs transformers = " in proc.stdout and (tmp_path / "hf" / "model.safetensors").is_file()


@pytest.mark.parametrize("precision", ["amp", "fp16"])
def test_gradient_caching_trains_under_half_precision_on_cuda(data, precision, tmp_path):
    run = train(data, "code_contrastive", precision, tmp_path / "ckpt", "--grad-cache-chunk", "4")
    losses = run.train_losses
    assert len(losses) >= 6 and all(math.isfinite(x) for x in losses), losses
