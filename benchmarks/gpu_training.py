"""The training part of benchmarks/gpu_check.py: built data, one run of each task in each precision, and the checks.

A run is a chain of three processes, each checked before the next starts: ``fairseq-train`` for UPDATES updates
(every logged loss finite, the last below the first, ``checkpoint_last.pt`` saved at UPDATES updates, the weights
held in the precision's dtype), the same command to UPDATES + RESUME_UPDATES (the log loads
``checkpoint_last.pt`` at UPDATES updates and continues from there), then ``fairseq-ext export-hf`` of the last
checkpoint (it writes nothing when transformers' model differs from fairseq's beyond 1e-4). Figures are read from
``--log-format json``, never from text.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gpu_process import Budget, run_process

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UPDATES, RESUME_UPDATES = 30, 10
PRECISIONS = {"fp16": ["--fp16"], "bf16": ["--bf16"], "amp": ["--amp"]}
CPU_PRECISIONS = {"bf16"}  # fairseq's --fp16 and --amp need CUDA
CAPS = {"train": 150, "resume": 120, "export": 90}  # seconds a process of the chain may take at most


@dataclass(frozen=True)
class Size:
    """What differs between the GPU check and its CPU rehearsal: sequence and batch sizes, model shrinking."""

    name: str
    tokens: int  # --tokens-per-sample
    max_tokens: int  # --max-tokens per update
    text_mb: float  # built-in corpus (text) and code corpus sizes
    code_mb: float
    shrink: dict  # --arch -> flags that shrink it (CPU only)


T5_TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "32", "--kv-dim", "8", "--encoder-ffn-embed-dim", "64",
           "--encoder-attention-heads", "4"]
ENCODER_TINY = ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                "--encoder-attention-heads", "2"]
SIZES = {
    "cuda": Size("cuda", 128, 8192, 2.0, 2.0, {}),  # 8 runs at once: a few GB of the GPU each
    "cpu": Size("cpu", 64, 1024, 0.3, 0.4, {
        "bart_small": [*ENCODER_TINY, "--decoder-layers", "1", "--decoder-embed-dim", "32",
                       "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2"],
        "roberta_small": ENCODER_TINY, "t5_encoder_small": T5_TINY, "hf_bert_base": ENCODER_TINY}),
}

# name -> (built data directory, flags). hf_bert on pairs is the last, the one left out first when time is short.
TASKS = {
    "hf_denoising": ("text-bin", ["--task", "hf_denoising", "--arch", "bart_small", "--share-all-embeddings",
                                  "--criterion", "cross_entropy_with_accuracy"]),
    "hf_masked_lm": ("text-bin", ["--task", "hf_masked_lm", "--arch", "roberta_small",
                                  "--criterion", "masked_lm_with_accuracy"]),
    "code_mlm": ("code-data", ["--task", "code_mlm", "--arch", "t5_encoder_small", "--mask-unit", "identifier",
                               "--sample-break-mode", "none", "--criterion", "masked_lm_with_accuracy"]),
    "code_contrastive": ("code-pairs", ["--task", "code_contrastive", "--arch", "t5_encoder_small",
                                       "--criterion", "info_nce", "--symmetric"]),
    "code_contrastive_hf_bert": ("code-pairs", ["--task", "code_contrastive", "--arch", "hf_bert_base",
                                               "--encoder-layers", "4", "--encoder-embed-dim", "512",
                                               "--encoder-ffn-embed-dim", "2048", "--encoder-attention-heads", "8",
                                               "--criterion", "info_nce", "--symmetric"]),
}
DEFAULT_TASKS = ["hf_denoising", "hf_masked_lm", "code_mlm", "code_contrastive"]


def build_data(work: Path, size: Size, budget: Budget, env: dict) -> dict:
    """The built-in corpus (text) and the standard library's code, one byte-level BPE trained on both, then in
    parallel: text binarized, ``fairseq-ext code-dataset`` and ``fairseq-ext code-pairs``. Returns the stage's
    record; raises RuntimeError with the failing step's log when a step fails."""
    from concurrent.futures import ThreadPoolExecutor

    from fairseq_ext.prep.builtin_corpus import write_builtin_code, write_builtin_corpus
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    text = write_builtin_corpus(work / "raw-text", max_bytes=int(size.text_mb * 1e6))
    code = write_builtin_code(work / "raw-code", max_bytes=int(size.code_mb * 1e6))
    prepare_corpus([work / "raw-text"], work / "text", valid_ratio=0.05, doc_sep="file", progress=False)
    tok = train_tokenizer([work / "text" / "train.txt", work / "raw-code"], vocab_size=8000, show_progress=False)
    tok.save_pretrained(str(work / "tok"))
    cli, t = [str(BIN / "fairseq-ext")], str(work / "tok")
    steps = {
        "text-bin": [*cli, "binarize", "--tokenizer", t, "--train", str(work / "text" / "train.txt"), "--valid",
                     str(work / "text" / "valid.txt"), "-o", str(work / "text-bin"),
                     "--max-line-tokens", str(size.tokens - 2), "--quiet"],
        "code-data": [*cli, "code-dataset", str(work / "raw-code"), "-o", str(work / "code-data"), "--tokenizer", t,
                      "--valid-ratio", "0.1", "--quiet"],
        "code-pairs": [*cli, "code-pairs", str(work / "raw-code"), "-o", str(work / "code-pairs"), "--tokenizer", t,
                       "--kind", "docstring", "--split-by", "file", "--valid-ratio", "0.1", "--quiet"],
    }
    with ThreadPoolExecutor(len(steps)) as pool:
        done = dict(zip(steps, pool.map(
            lambda item: run_process(item[1], budget.timeout(120), work / "logs" / f"{item[0]}.log", env),
            steps.items())))
    for name, proc in done.items():
        if not proc.ok:
            raise RuntimeError(f"{name}: {proc.failure()}")
    return {"text": text, "code": code, "tokenizer_size": len(tok),
            "code_dataset": json.loads((work / "code-data" / "code_dataset.json").read_text()).get("tokens"),
            "code_pairs": {k: v.get("pairs") for k, v in
                           json.loads((work / "code-pairs" / "code_pairs.json").read_text())["splits"].items()}}


def train_command(task: str, precision: str, size: Size, data: Path, save: Path, updates: int) -> list[str]:
    """The fairseq-train command of one run (the resume is the same command with a higher ``updates``)."""
    _data_name, flags = TASKS[task]
    arch = flags[flags.index("--arch") + 1]
    length = ["--tokens-per-sample", str(size.tokens)]
    if task.startswith("code_contrastive"):
        length = ["--max-query-tokens", str(size.tokens // 2), "--max-key-tokens", str(size.tokens)]
    elif task == "hf_denoising":
        length += ["--max-source-positions", str(size.tokens), "--max-target-positions", str(size.tokens)]
    total = UPDATES + RESUME_UPDATES
    return [
        str(BIN / "fairseq-train"), str(data), "--user-dir", str(REPO / "fairseq_ext"), *flags,
        *size.shrink.get(arch, []), *length, *PRECISIONS[precision], *(["--cpu"] if size.name == "cpu" else []),
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6", "--weight-decay", "0.01",
        "--clip-norm", "1.0", "--lr", "1e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "5",
        "--total-num-update", str(total), "--max-update", str(updates), "--max-tokens", str(size.max_tokens),
        "--num-workers", "0", "--seed", "1", "--log-format", "json", "--log-interval", "5",
        "--validate-interval", "1000", "--save-interval", "1000", "--validate-interval-updates", str(UPDATES),
        "--save-dir", str(save), "--no-epoch-checkpoints",
    ]


# fairseq-train's JSON progress lines: "TIME | INFO | TAG | {...}"
_RECORD = re.compile(r"^.* \| (?P<tag>train_inner|train|valid) \| (?P<json>\{.*\})\s*$")


def json_records(text: str, tag: str) -> list[dict]:
    """The ``tag`` records of a ``--log-format json`` log, their keys without the ``TAG_`` prefix.

    >>> json_records('x | INFO | valid | {"valid_loss": "8.1", "num_updates": "30"}', "valid")
    [{'loss': '8.1', 'num_updates': '30'}]
    """
    out = []
    for line in text.splitlines():
        m = _RECORD.match(line)
        if m and m["tag"] == tag:
            stats = json.loads(m["json"])
            out.append({k.removeprefix(f"{tag}_"): v for k, v in stats.items()})
    return out


def check_losses(text: str, first_update: int, last_update: int) -> tuple[dict, str | None]:
    """The run's train losses (figures) and what is wrong with them, or None: finite, falling, the updates
    counted from ``first_update`` to ``last_update``."""
    inner = json_records(text, "train_inner")
    losses = [float(r["loss"]) for r in inner]
    updates = [int(r["num_updates"]) for r in inner]
    valid = [float(r["loss"]) for r in json_records(text, "valid") if "loss" in r]
    fig = {"losses": losses, "updates": updates, "valid_losses": valid,
           "loss_scale": [float(r["loss_scale"]) for r in inner if "loss_scale" in r]}
    if len(losses) < 2:
        return fig, f"{len(losses)} train_inner records logged (at least 2 expected)"
    if not all(math.isfinite(x) for x in losses + valid):
        return fig, f"a loss is not finite: {losses} (valid {valid})"
    if not first_update <= updates[0] <= first_update + 4 or updates[-1] != last_update:
        return fig, f"updates logged {updates}: expected {first_update}..{last_update}"
    return fig, None


def exact_in(checkpoint: Path) -> dict:
    """Which half precision holds every floating weight of ``checkpoint`` exactly (fairseq saves float32 copies of
    the parameters it trained: a bf16 run's are all bfloat16 values, an fp16 run's float16, an amp run's neither)."""
    import torch

    from fairseq_ext.serialization import safe_torch_load

    state = safe_torch_load(checkpoint, map_location="cpu")
    weights = torch.cat([v.flatten().float() for v in state["model"].values() if v.is_floating_point()])
    return {"saved_dtypes": sorted({str(v.dtype) for v in state["model"].values() if v.is_floating_point()}),
            "num_updates": state["optimizer_history"][-1]["num_updates"],
            **{f"exact_{d}": bool(torch.equal(weights.to(getattr(torch, d)).float(), weights))
               for d in ("float16", "bfloat16")}}


EXPECTED_EXACT = {"fp16": "exact_float16", "bf16": "exact_bfloat16"}  # amp: float32 weights, nothing to hold


def exported_dtypes(out: Path) -> list[str]:
    """The dtypes of the exported model.safetensors."""
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        return sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})


def run_chain(task: str, precision: str, size: Size, work: Path, budget: Budget, env: dict) -> dict:
    """Train UPDATES updates, resume to UPDATES + RESUME_UPDATES, export: the run's record (``status`` pass, fail
    or timeout, ``reason``, the figures of each step, ``seconds``)."""
    start, name = time.perf_counter(), f"{task}-{precision}"
    data, save = work / TASKS[task][0], work / "runs" / name
    record = {"task": task, "precision": precision, "status": "pass", "reason": ""}
    steps = [("train", lambda: train_step(task, precision, size, data, save, budget, env)),
             ("resume", lambda: resume_step(task, precision, size, data, save, budget, env)),
             ("export", lambda: export_step(save, budget, env))]
    for step, check in steps:
        figures, problem, timed_out = check()
        record[step] = figures
        if problem:
            record.update(status="timeout" if timed_out else "fail", reason=f"{step}: {problem}")
            break
    shutil.rmtree(save, ignore_errors=True)  # checkpoints of small models, but 13 of them
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def train_step(task, precision, size, data, save, budget, env) -> tuple[dict, str | None, bool]:
    cmd = train_command(task, precision, size, data, save, UPDATES)
    proc = run_process(cmd, budget.timeout(CAPS["train"]), save.parent / f"{save.name}.train.log", env)
    if not proc.ok:
        return {"seconds": round(proc.seconds, 1)}, proc.failure(), proc.timed_out
    figures, problem = check_losses(proc.text, 5, UPDATES)
    figures["seconds"] = round(proc.seconds, 1)
    if problem is None and not figures["losses"][-1] < figures["losses"][0]:
        problem = f"the loss did not fall: first {figures['losses'][0]}, last {figures['losses'][-1]}"
    checkpoint = save / "checkpoint_last.pt"
    if problem is None and not checkpoint.is_file():
        problem = f"no {checkpoint.name} in {save}"
    if problem is None:
        figures["checkpoint"] = exact_in(checkpoint)
        problem = checkpoint_problem(figures["checkpoint"], precision, UPDATES)
    return figures, problem, False


def checkpoint_problem(found: dict, precision: str, updates: int) -> str | None:
    if found["num_updates"] != updates:
        return f"checkpoint_last.pt saved at {found['num_updates']} updates, not {updates}"
    key = EXPECTED_EXACT.get(precision)
    if key and not found[key]:
        return f"--{precision}: the saved weights are not all {key.removeprefix('exact_')} values (trained in fp32?)"
    return None


def resume_step(task, precision, size, data, save, budget, env) -> tuple[dict, str | None, bool]:
    total = UPDATES + RESUME_UPDATES
    cmd = train_command(task, precision, size, data, save, total)
    proc = run_process(cmd, budget.timeout(CAPS["resume"]), save.parent / f"{save.name}.resume.log", env)
    if not proc.ok:
        return {"seconds": round(proc.seconds, 1)}, proc.failure(), proc.timed_out
    figures, problem = check_losses(proc.text, UPDATES + 1, total)
    loaded = re.search(r"Loaded checkpoint (\S+) \(epoch (\d+) @ (\d+) updates\)", proc.text)
    figures.update(seconds=round(proc.seconds, 1), loaded=loaded and loaded.group(0))
    if problem is None and (loaded is None or int(loaded.group(3)) != UPDATES
                            or Path(loaded.group(1)).name != "checkpoint_last.pt"):
        problem = f"the log does not say it loaded checkpoint_last.pt @ {UPDATES} updates (found: {figures['loaded']})"
    if problem is None:
        figures["checkpoint"] = exact_in(save / "checkpoint_last.pt")
        problem = checkpoint_problem(figures["checkpoint"], precision, total)
    return figures, problem, False


def export_step(save: Path, budget: Budget, env: dict) -> tuple[dict, str | None, bool]:
    out = save / "hf"
    cmd = [str(BIN / "fairseq-ext"), "export-hf", str(save / "checkpoint_last.pt"), "-o", str(out)]
    proc = run_process(cmd, budget.timeout(CAPS["export"]), save.parent / f"{save.name}.export.log", env)
    if not proc.ok:
        return {"seconds": round(proc.seconds, 1)}, proc.failure(), proc.timed_out
    parity = re.search(r"parity: max \|[^|]+\| fairseq vs transformers = (\S+)", proc.text)
    figures = {"seconds": round(proc.seconds, 1), "parity_line": parity and parity.group(0),
               "max_abs_diff": parity and float(parity.group(1))}
    if parity is None or not (out / "model.safetensors").is_file():
        return figures, f"no parity line or no model.safetensors:\n{proc.text[-1500:]}", False
    figures["dtypes"] = exported_dtypes(out)
    return figures, None, False
