"""The GPU check: does every task train, resume and export in every precision on this GPU, and how fast is it?

One command (`bash scripts/gpu_check.sh`, which runs this) for the first GPU machine; about 6 minutes on one H100.
It writes ONE JSON file (--json), rewritten whole after every finished step, so a killed run still leaves what it
had. Stages, each with its own deadline inside --budget seconds (what runs past it is killed and marked timeout):

  data        the built-in corpus and the standard library's code, a byte-level BPE trained on both,
              `fairseq-ext binarize`, `code-dataset` and `code-pairs` (small: seconds)
  train       for each task (hf_denoising: bart_small, hf_masked_lm: roberta_small, code_mlm and code_contrastive:
              t5_encoder_small; code_contrastive_hf_bert when time allows) and each precision (--fp16, --bf16,
              --amp): 30 updates of fairseq-train (every logged loss finite, the last below the first,
              checkpoint_last.pt saved at 30 updates, its weights float16 / bfloat16 values for fp16 / bf16),
              the same command to 40 updates (the log loads checkpoint_last.pt @ 30 updates), `fairseq-ext
              export-hf` of that checkpoint (it refuses to write when transformers' model differs beyond 1e-4).
              Several runs at once on the one GPU (--workers).
  throughput  benchmarks/vs_transformers.py twice: `--device cuda --precision bf16 --size base` (bart_base,
              roberta_base and t5_encoder_base at 512 tokens against transformers' models on the same batches:
              tokens/s, and model FLOPs utilisation against --peak-tflops, found from the GPU's name) and
              `--device cuda --size cpu` (the head-to-head workloads); their JSON is merged in as written.

--device cpu rehearses the same stages at toy sizes, for CI: bf16 only (fairseq's --fp16 and --amp need CUDA: those
runs are recorded as skipped), no throughput stage.

    python benchmarks/gpu_check.py [--json gpu-check.json] [--device cuda|cpu] [--budget 360] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_process, gpu_training beside this file

from gpu_process import Budget, run_process, write_json  # noqa: E402
from gpu_training import (  # noqa: E402
    CPU_PRECISIONS,
    DEFAULT_TASKS,
    PRECISIONS,
    SIZES,
    TASKS,
    build_data,
    run_chain,
)

BENCH = Path(__file__).resolve().parent / "vs_transformers.py"
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a piece of torch.cuda.get_device_name(): first match wins.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("V100", 125.0)]
MARGIN_S = 10  # kept at the end of --budget for writing the report
SHARES = {"data": 0.2, "train": 0.45, "throughput_base": 0.6}  # of the time left when each stage starts
BENCH_UPDATES = 20  # updates of each training of vs_transformers.py (its default is 30), once a side (--repeats 1)


class Report:
    """The JSON document, written atomically to ``path`` after every change (threads share it)."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data, self.lock = path, {**head, "stages": {}}, threading.Lock()
        self.started = time.perf_counter()

    def stage(self, name: str, record: dict) -> None:
        with self.lock:
            self.data["stages"][name] = record
            self.save()

    def add_run(self, record: dict) -> None:
        with self.lock:
            self.data["stages"]["train"]["runs"].append(record)
            self.save()

    def save(self) -> None:
        self.data["seconds"] = round(time.perf_counter() - self.started, 1)
        write_json(self.path, self.data)


def peak_tflops(name: str | None) -> float | None:
    """The dense bf16 peak of the GPU called ``name`` (None: not in the table).

    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe"), peak_tflops("Tesla T4")
    (989.0, 756.0, None)
    """
    return next((peak for piece, peak in PEAK_BF16_TFLOPS if name and piece in name), None)


def environment(device: str, peak: float | None) -> dict:
    """What ran the check: the GPU's name, the peak used for MFU, torch and CUDA versions, cores."""
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    return {"device": device, "gpu": gpu, "peak_bf16_tflops": peak if peak is not None else peak_tflops(gpu),
            "peak_source": "--peak-tflops" if peak is not None else "table by GPU name",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_cores": os.cpu_count(), "host": platform.node()}


def child_env(workers: int) -> dict:
    """Every child process shares the cores: torch threads = cores / workers."""
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    return dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false",
                PYTHONUNBUFFERED="1")


def data_stage(report: Report, work: Path, size, budget: Budget, env: dict) -> bool:
    start = time.perf_counter()
    try:
        record = {"status": "pass", "reason": "", **build_data(work, size, budget, env)}
    except Exception as exc:  # noqa: BLE001 - whatever stops the data, the report says it and the check ends
        status = "timeout" if "timed out" in str(exc) or not budget.left() else "fail"
        record = {"status": status, "reason": str(exc) if isinstance(exc, RuntimeError) else repr(exc)}
    record["seconds"] = round(time.perf_counter() - start, 1)
    report.stage("data", record)
    return record["status"] == "pass"


def train_stage(report: Report, args, work: Path, budget: Budget, env: dict) -> None:
    """Every (task, precision) run through a pool of ``args.workers``; runs the device cannot do are skipped."""
    start, size = time.perf_counter(), SIZES[args.device]
    report.stage("train", {"status": "running", "updates": 30, "resume_to": 40, "workers": args.workers, "runs": []})
    jobs = []
    for task in args.tasks:  # the task order is the priority: hf_bert on pairs last
        for precision in args.precisions:
            if args.device == "cpu" and precision not in CPU_PRECISIONS:
                report.add_run({"task": task, "precision": precision, "status": "skipped",
                                "reason": f"--{precision} needs CUDA (fairseq runs it on a GPU only)"})
            else:
                jobs.append((task, precision))
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(lambda j: report.add_run(run_chain(*j, size, work, budget, env)), job) for job in jobs]
        wait(futures)  # each process is killed at the deadline: every chain ends by then
    for future in futures:
        if future.exception() is not None:  # a bug of this script, not a failed run: say it and go on
            report.add_run({"status": "fail", "reason": f"gpu_check: {future.exception()!r}"})
    runs = report.data["stages"]["train"]["runs"]
    status = "pass" if all(r["status"] in ("pass", "skipped") for r in runs) else (
        "timeout" if any(r["status"] == "timeout" for r in runs) else "fail")
    report.stage("train", {**report.data["stages"]["train"], "status": status,
                           "seconds": round(time.perf_counter() - start, 1)})


def throughput_stage(report: Report, work: Path, budget: Budget, env: dict, script: Path = BENCH) -> None:
    """benchmarks/vs_transformers.py at base size (with MFU) then the head-to-head workloads; their JSON merged."""
    peak = report.data["environment"]["peak_bf16_tflops"]
    updates = ["--updates", str(BENCH_UPDATES), "--repeats", "1"]
    runs = {"base": (["--device", "cuda", "--precision", "bf16", "--size", "base", *updates,
                      *(["--peak-tflops", str(peak)] if peak else [])], SHARES["throughput_base"]),
            "workloads": (["--device", "cuda", "--size", "cpu", *updates], 1.0)}
    record = {"status": "running", "script": str(script)}
    for name, (flags, share) in runs.items():
        record[name] = bench_run(script, flags, work / f"throughput-{name}.json", budget.share(share), env)
        report.stage("throughput", record)
    statuses = {record[name]["status"] for name in runs}
    record["status"] = "pass" if statuses == {"pass"} else "timeout" if "timeout" in statuses else "fail"
    if peak is None:
        record["reason"] = "no --peak-tflops and the GPU is not in the table: MFU not computed"
    report.stage("throughput", record)


def bench_run(script: Path, flags: list[str], out: Path, budget: Budget, env: dict) -> dict:
    """One run of the benchmark script: its status, command, seconds and the JSON it wrote."""
    import json

    if not script.is_file():
        return {"status": "fail", "reason": f"{script} is missing (issue 19, point 1)"}
    cmd = [sys.executable, str(script), *flags, "--json", str(out)]
    proc = run_process(cmd, budget.left(), out.with_suffix(".log"), env)
    record = {"status": "pass", "reason": "", "command": " ".join(cmd[1:]), "seconds": round(proc.seconds, 1)}
    if not proc.ok:
        record.update(status="timeout" if proc.timed_out else "fail", reason=proc.failure())
    try:
        record["result"] = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        record.update(status="fail" if proc.ok else record["status"], result=None,
                      reason=record["reason"] or f"{out.name}: no JSON written ({exc})")
    return record


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("gpu-check.json"), help="the report (default %(default)s)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: the check; cpu: its rehearsal at toy sizes, bf16 only (default %(default)s)")
    ap.add_argument("--budget", type=float, default=360.0, help="seconds for everything (default %(default)s)")
    ap.add_argument("--workers", type=int, help="runs at once (default: 8 on cuda, 2 on cpu)")
    ap.add_argument("--tasks", type=names(TASKS), help=f"comma-separated, of {', '.join(TASKS)} (default: all on "
                    f"cuda, hf_bert on pairs last; {', '.join(DEFAULT_TASKS)} on cpu)")
    ap.add_argument("--precisions", type=names(PRECISIONS), default=list(PRECISIONS),
                    help="comma-separated, of fp16, bf16, amp (default: all)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput stage")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: by its name)")
    ap.add_argument("--work", type=Path, help="working directory, kept (default: a temporary one, removed)")
    return ap


def names(table) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of keys of ``table``."""

    def parse(text: str) -> list[str]:
        chosen = [n.strip() for n in text.split(",") if n.strip()]
        wrong = [n for n in chosen if n not in table]
        if wrong or not chosen:
            raise argparse.ArgumentTypeError(f"{','.join(wrong) or 'nothing'}: choose from {', '.join(table)}")
        return chosen
    return parse


def check_args(args) -> None:
    """Bad settings: one line on stderr, exit 2, nothing written."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build: install a CUDA one"
        refuse(f"--device cuda: no CUDA device visible (torch {torch.__version__}, {build}); "
               "--device cpu runs the CPU rehearsal")
    if args.budget < 60:
        refuse(f"--budget: at least 60 seconds, got {args.budget:g}")
    if args.workers is not None and args.workers < 1:
        refuse(f"--workers: at least 1, got {args.workers}")
    if not args.json.parent.resolve().is_dir():
        refuse(f"--json {args.json}: the directory {args.json.parent} does not exist")


def refuse(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    args.workers = args.workers or (8 if args.device == "cuda" else 2)
    args.tasks = args.tasks or (list(TASKS) if args.device == "cuda" else DEFAULT_TASKS)
    total = Budget(args.budget - MARGIN_S)
    report = Report(args.json, {"schema": 1, "ok": False, "budget_s": args.budget,
                                "environment": environment(args.device, args.peak_tflops)})
    report.save()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = child_env(args.workers)
    try:
        if data_stage(report, work, SIZES[args.device], total.share(SHARES["data"]), env):
            train_stage(report, args, work, total.share(1.0 if skip_throughput(args) else SHARES["train"]), env)
        else:
            report.stage("train", {"status": "skipped", "reason": "the data stage failed", "runs": []})
        if skip_throughput(args):
            why = "needs CUDA" if args.device == "cpu" else "--no-throughput"
            report.stage("throughput", {"status": "skipped", "reason": why})
        else:
            throughput_stage(report, work, total, env)
    finally:
        if args.work is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    stages = report.data["stages"]
    report.data["ok"] = all(s["status"] in ("pass", "skipped") for s in stages.values()) and \
        stages["train"]["status"] == "pass"
    report.save()
    print(summary(report.data))
    return 0 if report.data["ok"] else 1


def skip_throughput(args) -> bool:
    return args.device == "cpu" or args.no_throughput


def summary(data: dict) -> str:
    """A few lines for the terminal: each stage's status, each run's, and where the JSON is."""
    lines = [f"gpu_check on {data['environment']['gpu'] or data['environment']['device']}: "
             f"{'PASS' if data['ok'] else 'FAIL'} in {data['seconds']:.0f} s"]
    for name, stage in data["stages"].items():
        lines.append(f"  {name}: {stage['status']} {stage.get('reason', '')[:200]}".rstrip())
        for run in stage.get("runs", []):
            lines.append(f"    {run.get('task')} {run.get('precision')}: {run['status']} "
                         f"{run.get('reason', '').splitlines()[0] if run.get('reason') else ''}".rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
