"""benchmarks/vs_transformers.py: both trainers get the same settings, bad options stop with one line, and a
``--quick`` run of all three workloads gives every figure, sane, with the start check holding (the evaluator on
the exported initial model gives the loss the fairseq model gives itself: the weights and the evaluator agree).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "vs_transformers.py"
spec = importlib.util.spec_from_file_location("vs_transformers", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclass looks its module up there
spec.loader.exec_module(bench)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("workload", bench.WORKLOADS)
def test_both_trainers_get_the_same_settings(workload):
    s = bench.Setup(updates=30, warmup=3, batch=12, tokens=64, lr=3e-4, seed=7)
    ours, theirs = [str(x) for x in bench.train_flags(s)], bench.trainer_args(s, workload)
    assert int(flag(ours, "--max-update")) == int(flag(ours, "--total-num-update")) == theirs["max_steps"] == 30
    assert int(flag(ours, "--warmup-updates")) == theirs["warmup_steps"] == 3
    assert float(flag(ours, "--lr")) == theirs["learning_rate"] == 3e-4
    assert flag(ours, "--adam-betas") == f"({theirs['adam_beta1']},{theirs['adam_beta2']})" == "(0.9,0.98)"
    assert float(flag(ours, "--adam-eps")) == theirs["adam_epsilon"] == 1e-6
    assert float(flag(ours, "--weight-decay")) == theirs["weight_decay"] == 0.01
    assert float(flag(ours, "--clip-norm")) == theirs["max_grad_norm"] == 1.0
    assert flag(ours, "--lr-scheduler") == "polynomial_decay" and theirs["lr_scheduler_type"] == "linear"
    assert float(flag(ours, "--end-learning-rate")) == 0 and float(flag(ours, "--power")) == 1
    assert int(flag(ours, "--seed")) == theirs["seed"] == 7
    assert int(flag(ours, "--batch-size")) == 12 and int(flag(ours, "--max-tokens")) == 12 * 64
    # mlm: Trainer batches blocks itself; the others: one of our collated batches a step
    assert theirs["per_device_train_batch_size"] == (12 if workload == "mlm" else 1)
    model = bench.model_flags(workload, s)
    assert int(flag(model, "--tokens-per-sample")) == 64
    assert workload == "denoising" or float(flag(model, "--mask-prob")) == 0.15  # DataCollatorForLanguageModeling's
    assert float(flag(ours, "--dropout")) == s.dropout == 0.1


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "mlm,ner"], "--workloads: unknown ner; choose from mlm, denoising, code_mlm"),
    (["--updates", "2"], "--updates: 2 is too few"),
    (["--precision", "bf16"], "--precision bf16: only with --device cuda"),
    (["--repeats", "-1"], "--repeats: -1 is negative"),
    (["--threads", "0"], "--threads: 0; at least 1"),
    (["--quick", "--size", "base"], "--quick: tiny models of the cpu size; not with --size base"),
])
def test_bad_options_stop_with_one_line(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, *argv, "--work", tmp_path / "w"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and message in proc.stderr
    assert not (tmp_path / "w").exists()


def test_a_work_directory_it_did_not_make_is_never_deleted(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, SCRIPT, "--work", mine, "--workloads", "ner"], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and proc.stderr.strip() == (
        f"--work {mine}: not an empty directory nor one this script made (no .vs_transformers); give a new one")
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_a_quick_run_gives_every_figure_and_the_start_check_holds(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", out], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert list(record["results"]) == list(bench.WORKLOADS)
    for name, r in record["results"].items():
        for side in ("ours", "theirs"):
            run = r[side]
            assert run["updates"] == record["setup"]["updates"] == 6, (name, side)
            assert run["tokens_per_s"] > 0 and run["tokens_per_cpu_s"] > 0 and run["peak_rss_mb"] > 100, (name, side)
            assert run["timed_updates"] == 6 - 2 and run["timed_tokens"] == sum(run["tokens_per_update"][2:])
            assert math.isfinite(run["valid_loss"]) and 0 < run["valid_loss"] < 10, (name, side)
        # the fairseq model's own loss and the evaluator's on its export, before any training
        assert r["figures"]["start_abs_diff"] < 1e-4, name
        assert r["figures"]["speed_ratio"] == pytest.approx(r["ours"]["tokens_per_s"] / r["theirs"]["tokens_per_s"])
        # the same batches on both sides (mlm: the same blocks; denoising: our batches, in Trainer's order)
        assert r["figures"]["same_tokens_per_update"] in (("same batches", "same order") if name == "denoising"
                                                          else ("same order",)), name
    assert "mlm: ours/theirs tokens/s" in proc.stdout and "(goal >= 1.1x" in proc.stdout
    assert "goal within 2%" in proc.stdout and "| code_mlm |" in proc.stdout
