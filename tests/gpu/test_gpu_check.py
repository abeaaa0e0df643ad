"""scripts/gpu_check.sh (benchmarks/gpu_check.py) on CPU: its logic, so that its first run on a GPU is not its
first run. The whole script at toy sizes (--device cpu: bf16 runs, fp16/amp recorded as skipped) writes a JSON
with every stage, the resume seen and the export's parity; its pieces: processes killed at their deadline, a run
with no time left marked as timed out, loss checks, the throughput stage's call of benchmarks/vs_transformers.py
(against a stand-in script: the options it passes, the JSON it merges, a stand-in that hangs), one-line refusals.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, error_lines

sys.path.insert(0, str(REPO / "benchmarks"))  # gpu_check imports its modules from beside it
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
import gpu_process  # noqa: E402
import gpu_training  # noqa: E402

VENV = Path(sys.executable).parents[1]


@pytest.mark.slow
def test_the_script_on_cpu_trains_resumes_and_exports_and_writes_one_json(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tasks",
                           "hf_masked_lm,code_mlm", "--precisions", "bf16,fp16", "--budget", "300"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=400,
                          env=dict(os.environ, FAIRSEQ_EXT_VENV=str(VENV), GPU_CHECK_JSON=str(out)))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["environment"]["device"] == "cpu" and report["seconds"] < 300
    assert list(report["stages"]) == ["data", "train", "throughput"]
    assert report["stages"]["throughput"] == {"status": "skipped", "reason": "needs CUDA"}
    runs = {(r["task"], r["precision"]): r for r in report["stages"]["train"]["runs"]}
    assert set(runs) == {(t, p) for t in ("hf_masked_lm", "code_mlm") for p in ("bf16", "fp16")}
    for task in ("hf_masked_lm", "code_mlm"):
        assert runs[task, "fp16"]["status"] == "skipped" and "needs CUDA" in runs[task, "fp16"]["reason"]
        run = runs[task, "bf16"]
        assert run["status"] == "pass", run["reason"]
        train, resume, export = run["train"], run["resume"], run["export"]
        assert train["updates"][-1] == 30 and resume["updates"] == [35, 40]
        assert all(math.isfinite(x) for x in train["losses"] + resume["losses"])
        assert train["losses"][-1] < train["losses"][0]
        assert "checkpoint_last.pt (epoch " in resume["loaded"] and resume["loaded"].endswith(" @ 30 updates)")
        assert train["checkpoint"]["exact_bfloat16"] and resume["checkpoint"]["num_updates"] == 40
        assert export["max_abs_diff"] <= 1e-4 and export["dtypes"] == ["F32"]
    assert "gpu_check on cpu: PASS" in proc.stdout
    assert not list(tmp_path.glob(".report.json*"))  # written atomically: no temporary left


def test_a_process_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    child = tmp_path / "child.pid"
    script = f"import os, subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(child)!r}, 'w')" \
             ".write(str(p.pid)); time.sleep(60)"
    start = time.monotonic()
    proc = gpu_process.run_process([sys.executable, "-c", script], 3, tmp_path / "log")
    assert proc.timed_out and time.monotonic() - start < 10
    assert proc.failure().startswith("timed out after 3 s")
    pid = int(child.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_run_with_no_time_left_is_marked_timeout_without_starting(tmp_path):
    record = gpu_training.run_chain("code_mlm", "bf16", gpu_training.SIZES["cpu"], tmp_path,
                                    gpu_process.Budget(0), dict(os.environ))
    assert record["status"] == "timeout" and record["seconds"] < 5
    assert record["reason"] == "train: not started: no time left before the stage's deadline (fairseq-train)"


LOG = "\n".join(f'2026 | INFO | train_inner | {{"loss": "{x}", "num_updates": "{u}"}}' for u, x in
                [(5, 9.1), (10, 8.4), (15, "{}"), (20, 7.0)])


@pytest.mark.parametrize("bad,problem", [("8.0", None), ("nan", "a loss is not finite"),
                                         ("inf", "a loss is not finite")])
def test_losses_are_read_from_the_json_log_and_must_be_finite(bad, problem):
    figures, found = gpu_training.check_losses(LOG.replace("{}", bad) + "\nnoise | {", 5, 20)
    assert figures["updates"] == [5, 10, 15, 20] and figures["losses"][:2] == [9.1, 8.4]
    assert (found or "").startswith(problem or "")
    assert (found is None) == (problem is None)


def test_losses_must_cover_the_updates_asked_for():
    assert gpu_training.check_losses(LOG.replace("{}", "8"), 31, 40)[1] == \
        "updates logged [5, 10, 15, 20]: expected 31..40"


STAND_IN = """import json, pathlib, sys, time
args = sys.argv[1:]
if (pathlib.Path(__file__).parent / "hang").exists() and "base" in args:
    time.sleep(600)
json.dump({"argv": args, "tokens_per_s": 1.0}, open(args[args.index("--json") + 1], "w"))
"""


def throughput(tmp_path, script_text: str | None, seconds: float = 60, hang: bool = False):
    """The throughput stage run against a stand-in benchmark (``hang``: its base-size run never ends)."""
    if hang:
        (tmp_path / "hang").touch()
    script = tmp_path / "vs_transformers.py"
    if script_text is not None:
        script.write_text(script_text)
    report = gpu_check.Report(tmp_path / "r.json", {"environment": {"peak_bf16_tflops": 989.0}})
    gpu_check.throughput_stage(report, tmp_path, gpu_process.Budget(seconds), dict(os.environ), script=script)
    assert json.loads((tmp_path / "r.json").read_text())["stages"]["throughput"] == report.data["stages"]["throughput"]
    return report.data["stages"]["throughput"]


def test_throughput_calls_the_benchmark_at_base_size_with_the_peak_and_merges_its_json(tmp_path):
    stage = throughput(tmp_path, STAND_IN)
    assert stage["status"] == "pass"
    base, workloads = stage["base"]["result"]["argv"], stage["workloads"]["result"]["argv"]
    assert base[:-2] == ["--device", "cuda", "--precision", "bf16", "--size", "base", "--updates", "20",
                         "--repeats", "1", "--peak-tflops", "989.0"]
    assert workloads[:-2] == ["--device", "cuda", "--size", "cpu", "--updates", "20", "--repeats", "1"]
    assert workloads[-2] == "--json"
    assert stage["base"]["result"]["tokens_per_s"] == 1.0


def test_a_benchmark_that_hangs_is_killed_at_its_share_and_the_rest_still_runs(tmp_path):
    start = time.monotonic()
    stage = throughput(tmp_path, STAND_IN, seconds=6, hang=True)
    assert time.monotonic() - start < 12
    assert stage["status"] == "timeout" and stage["base"]["status"] == "timeout" and stage["base"]["result"] is None
    assert stage["workloads"]["status"] == "pass"


def test_a_missing_benchmark_is_a_failure_with_its_reason(tmp_path):
    stage = throughput(tmp_path, None)
    assert stage["status"] == "fail" and stage["base"]["reason"].endswith("vs_transformers.py is missing "
                                                                          "(issue 19, point 1)")


def test_peak_flops_by_gpu_name():
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.peak_tflops("Tesla T4") is None and gpu_check.peak_tflops(None) is None


@pytest.mark.parametrize("argv,message", [
    (["--budget", "30"], "gpu_check: --budget: at least 60 seconds, got 30"),
    (["--workers", "0"], "gpu_check: --workers: at least 1, got 0"),
    (["--json", "no/such/dir/r.json"], "gpu_check: --json no/such/dir/r.json: the directory no/such/dir does not "
                                       "exist"),
    (["--tasks", "code_mlm,nope"], "gpu_check.py: error: argument --tasks: nope: choose from hf_denoising, "
                                   "hf_masked_lm, code_mlm, code_contrastive, code_contrastive_hf_bert"),
])
def test_bad_settings_are_refused_in_one_line(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", *argv],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and error_lines(proc.stderr)[-1] == message and not (tmp_path / "gpu-check.json")\
        .exists()


def test_cuda_is_refused_in_one_line_where_torch_sees_no_gpu(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        gpu_check.check_args(gpu_check.build_parser().parse_args(["--device", "cuda"]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("gpu_check: --device cuda: no CUDA device visible (torch ")
