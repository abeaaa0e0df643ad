"""Head to head with transformers' Trainer: the same model, the same initial weights, the same token ids.

Three workloads, each trained twice in one run on one machine:

  mlm        masked LM, RoBERTa layout (a shrunk roberta_small): `fairseq-train --task hf_masked_lm --criterion
             masked_lm_with_accuracy --arch roberta_small` against `Trainer` set up as run_mlm.py sets it up:
             RobertaForMaskedLM, DataCollatorForLanguageModeling(mlm_probability=0.15) over the very blocks of
             token ids our task trains on (unmasked again), shuffled by Trainer's own sampler
  denoising  BART denoising (a shrunk bart_base): `--task hf_denoising --arch bart_small` against
             BartForConditionalGeneration; transformers has no PyTorch denoising collator, so Trainer gets OUR
             collated batches (src_tokens -> input_ids + attention_mask, prev_output_tokens -> decoder_input_ids,
             target -> labels with pad = -100), the same batches fairseq-train trains on, in Trainer's order
  code_mlm   T5-encoder code MLM on an Arrow code dataset (`fairseq-ext code-dataset` over this Python's
             standard library): `--task code_mlm --arch t5_encoder_small` against T5EncoderModel plus the LM head
             a user writes (T5LMHead's: dense, GELU, T5LayerNorm, the tied embeddings scaled by d^-1/2, a bias;
             export-hf writes the encoder only), on our collated batches as for denoising

Same initial weights: ours is built first (`fairseq-train` for one update at learning rate 0 saves the freshly
initialised model, unchanged), then `fairseq-ext export-hf` (with its parity check) gives the transformers model
theirs starts from; T5's head is copied from the checkpoint. Ours continues from that checkpoint
(--restore-file, optimizer, scheduler, meters and data loader reset), so both start from identical weights. The
start check evaluates the initial fairseq model with fairseq's own criterion and its export with the evaluator
below: the two losses agree within 1e-4 or the weights (or the evaluator) are wrong.

Both sides get: the same tokens per update (--batch-size blocks), AdamW betas (0.9, 0.98), eps 1e-6, weight decay
0.01, linear warmup then linear decay to 0 (fairseq's polynomial_decay, power 1), clip norm 1.0 (max_grad_norm),
dropout 0.1, the same number of updates, seed and torch threads. What differs is each library's own: fairseq's
warmup starts at lr / W where transformers' starts at 0, Trainer exempts biases and LayerNorm weights from weight
decay, and (mlm) each side masks its own way at mask probability 0.15, 80/10/10.

Measured: tokens/s of training = non-pad input tokens (src_tokens / input_ids) of updates K+1..N over the time
from the end of update K to the end of update N (K = --skip; both clocks read right after the optimizer step:
fairseq's Trainer.train_step returning, Trainer's on_step_end; on CUDA synchronised at K and N), so start-up and
the first K updates are left out the same way on both sides; peak memory (the training process's peak RSS on CPU,
torch.cuda.max_memory_allocated on CUDA); and the validation loss of both final models by ONE evaluator: our
final checkpoint is exported (export-hf), then both transformers models are evaluated by the same code on the same
fixed masked / noised validation batches (our task's valid split, built once, seed 1): mean cross-entropy (nats)
over the target tokens. Goals printed beside: ours >= 1.1x their tokens/s, loss within 2%. Each side trains
--repeats times (2), alternating, and its fastest run counts (a shared machine's load comes and goes); tokens per
CPU second are printed too.

    python benchmarks/vs_transformers.py [--updates N] [--repeats R] [--workloads mlm,denoising,code_mlm]
        [--device cpu|cuda] [--precision fp32|bf16|fp16] [--size cpu|base] [--peak-tflops F] [--json FILE]
        [--work DIR] [--quick]

  --size cpu   (default) 4 layers (BART 2+2), 256 wide, 4 heads, FFN 1024, blocks of 128 tokens, 8 per update,
               30 updates (3 left out of the clock); on --device cuda the same models with 4x the batch (32 blocks)
  --size base  roberta_base, bart_base, t5_encoder_base at 512 tokens, 16 blocks per update (the GPU check);
               model FLOPs utilisation (6 x parameters x tokens/s over the peak) is printed where the peak is
               known (H100/H200/A100 by name) or given by --peak-tflops
  --json FILE  every figure, written atomically; --work DIR keeps the working directory (else a temporary one)
  --quick      tiny models and a few updates (the test's run)
  --ours-flags extra fairseq-train flags for ours (e.g. "--compile-model"); fairseq_ext's --pad-to-multiple
               defaults to 8 on CUDA by itself
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
WORKLOADS = ("mlm", "denoising", "code_mlm")
JUDGED_UPDATES = 10  # fewer updates (--quick) print figures but no verdict on the goals
MARKER = ".vs_transformers"  # in a --work directory this script made (the only kind it deletes)
# dense tensor-core peaks (TFLOP/s) by a piece of torch.cuda.get_device_name(), first match wins (PCIe before SXM)
PEAK_TFLOPS = {"H100 PCIe": {"bf16": 756.0, "fp16": 756.0}, "H100 NVL": {"bf16": 835.0, "fp16": 835.0},
               "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp16": 989.0},
               "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}}
GOAL_SPEED, GOAL_LOSS = 1.1, 0.02


@dataclass
class Setup:
    """The settings both sides get (one place, so that they cannot drift apart)."""

    updates: int = 30
    skip: int = 3  # updates left out of the clock on both sides
    batch: int = 8  # blocks per update
    tokens: int = 128  # tokens per block
    layers: int = 4
    dim: int = 256
    heads: int = 4
    ffn: int = 1024
    size: str = "cpu"
    lr: float = 5e-4
    warmup: int = 4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    dropout: float = 0.1
    seed: int = 1
    threads: int = 2
    device: str = "cpu"
    precision: str = "fp32"
    valid_batches: int = 20
    repeats: int = 2  # trainings of each side (alternating); the fastest counts
    vocab: int = 8000  # a multiple of 8: fairseq's dictionary adds no rows, so both models have the same
    corpus_bytes: int = 2_000_000
    code_include: list[str] = field(default_factory=list)  # code-dataset --include (gitignore syntax; [] = all)


def setup_from(args: argparse.Namespace) -> Setup:
    s = Setup(device=args.device, precision=args.precision, size=args.size, threads=args.threads)
    if args.quick:
        s = replace(s, updates=6, skip=2, repeats=1, batch=4, tokens=64, layers=1, dim=64, heads=2, ffn=128, warmup=2,
                    valid_batches=4, vocab=2000, corpus_bytes=400_000,
                    code_include=["json/", "textwrap.py", "html/", "email/"])
    elif args.size == "base":
        s = replace(s, tokens=512, batch=16, layers=0, dim=0, heads=0, ffn=0, corpus_bytes=8_000_000, lr=2e-4)
    elif args.device == "cuda":
        s = replace(s, batch=32, corpus_bytes=6_000_000)
    return replace(s, updates=args.updates or s.updates, repeats=args.repeats or s.repeats)


# ---------------------------------------------------------------- ours: fairseq-train's flags

def model_flags(workload: str, s: Setup) -> list[str]:
    """The fairseq-train flags of the model and task (the shrunk presets, or the base ones at --size base)."""
    t = str(s.tokens)
    sized = lambda prefixes: [x for p in prefixes for x in (  # noqa: E731
        f"--{p}-layers", str(s.layers if p == "encoder" or workload != "denoising" else max(1, s.layers // 2)),
        f"--{p}-embed-dim", str(s.dim), f"--{p}-ffn-embed-dim", str(s.ffn), f"--{p}-attention-heads", str(s.heads))]
    if workload == "mlm":
        arch = ["--arch", "roberta_base"] if s.size == "base" else ["--arch", "roberta_small", *sized(["encoder"])]
        return ["--task", "hf_masked_lm", "--criterion", "masked_lm_with_accuracy", *arch, "--tokens-per-sample", t,
                "--sample-break-mode", "none", "--mask-prob", "0.15", "--attention-dropout", str(s.dropout)]
    if workload == "denoising":
        if s.size == "base":
            arch = ["--arch", "bart_base"]
        else:
            arch = ["--arch", "bart_small", *sized(["encoder", "decoder"])]
            arch[arch.index("--encoder-layers") + 1] = str(max(1, s.layers // 2))
        return ["--task", "hf_denoising", "--criterion", "cross_entropy", *arch, "--share-all-embeddings",
                "--tokens-per-sample", t, "--max-source-positions", t, "--max-target-positions", t,
                "--sample-break-mode", "complete", "--attention-dropout", str(s.dropout)]
    arch = ["--arch", "t5_encoder_base"] if s.size == "base" else [
        "--arch", "t5_encoder_small", *sized(["encoder"]), "--kv-dim", str(s.dim // s.heads)]
    return ["--task", "code_mlm", "--criterion", "masked_lm_with_accuracy", *arch, "--data-format", "arrow",
            "--tokens-per-sample", t, "--sample-break-mode", "none", "--mask-prob", "0.15"]  # the task's mask unit


def train_flags(s: Setup, lr: float | None = None, updates: int | None = None) -> list[str]:
    """Optimizer, schedule, batch and run flags of ours (lr 0 and 1 update: the initial checkpoint)."""
    updates = s.updates if updates is None else updates
    lr = s.lr if lr is None else lr
    device = ["--cpu"] if s.device == "cpu" else {"fp32": [], "bf16": ["--bf16"], "fp16": ["--fp16"]}[s.precision]
    return ["--optimizer", "adam", "--adam-betas", f"({s.betas[0]},{s.betas[1]})", "--adam-eps", str(s.eps),
            "--weight-decay", str(s.weight_decay), "--clip-norm", str(s.clip_norm), "--lr", str(lr),
            "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(min(s.warmup, updates)),
            "--total-num-update", str(updates), "--end-learning-rate", "0", "--power", "1",
            "--max-update", str(updates), "--batch-size", str(s.batch), "--max-tokens", str(s.batch * s.tokens),
            "--required-batch-size-multiple", "1", "--dropout", str(s.dropout),
            "--seed", str(s.seed), "--num-workers", "0", "--disable-validation", "--no-epoch-checkpoints",
            "--log-format", "json", "--log-interval", "10", *device]


def trainer_args(s: Setup, workload: str) -> dict:
    """TrainingArguments' settings for theirs (the same values as train_flags)."""
    return {"per_device_train_batch_size": s.batch if workload == "mlm" else 1, "max_steps": s.updates,
            "learning_rate": s.lr, "warmup_steps": min(s.warmup, s.updates), "lr_scheduler_type": "linear",
            "optim": "adamw_torch", "adam_beta1": s.betas[0], "adam_beta2": s.betas[1], "adam_epsilon": s.eps,
            "weight_decay": s.weight_decay, "max_grad_norm": s.clip_norm, "seed": s.seed, "data_seed": s.seed,
            "bf16": s.precision == "bf16", "fp16": s.precision == "fp16", "use_cpu": s.device == "cpu"}


def speed_flags(extra: str | None) -> list[str]:
    """--ours-flags (e.g. --compile-model). fairseq_ext's own speed settings apply by themselves: --pad-to-multiple
    defaults to 8 on CUDA (none on the CPU), host synchronisation is gone from the step."""
    return extra.split() if extra else []


def threads_env(s: Setup) -> dict:
    n = str(s.threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "TOKENIZERS_PARALLELISM": "false"}


def run(cmd: list, log: Path | None = None, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    text = proc.stdout + proc.stderr
    if log:
        log.write_text(text)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(str(c) for c in cmd)}\n{text[-3000:]}")
    return text


def measured(cmd: list, log: Path, env: dict) -> None:
    """Run a worker (output to ``log``), or exit with the end of its log."""
    with open(log, "w") as out:
        code = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        sys.exit(f"failed ({code}), see {log}:\n{log.read_text()[-3000:]}")


# ---------------------------------------------------------------- data

def prepare(work: Path, s: Setup, workloads: list[str]) -> dict[str, Path]:
    """The built-in corpus -> tokenizer (vocab 8000) -> binarized train/valid; the stdlib -> a code dataset."""
    from fairseq_ext.prep.binarize_dir import binarize_directory
    from fairseq_ext.prep.builtin_corpus import write_builtin_corpus
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    write_builtin_corpus(work / "raw", max_bytes=s.corpus_bytes)
    prepare_corpus([work / "raw"], work / "text", valid_ratio=0.03, doc_sep="file", progress=False)
    tok = train_tokenizer([work / "text" / "train.txt"], vocab_size=s.vocab, show_progress=False,
                          model_max_length=s.tokens)
    tok.save_pretrained(str(work / "tok"))
    binarize_directory(work / "tok", {x: work / "text" / f"{x}.txt" for x in ("train", "valid")}, work / "bin",
                       max_line_tokens=s.tokens - 2, progress=False)
    data = {"mlm": work / "bin", "denoising": work / "bin"}
    if "code_mlm" in workloads:
        include = [x for g in s.code_include for x in ("--include", g)]
        run([BIN / "fairseq-ext", "code-dataset", sysconfig.get_paths()["stdlib"], "-o", work / "code",
             "--tokenizer", work / "tok", "--languages", "python", "--exclude", "test/", *include,
             "--valid-ratio", "0.02", "--seed", "0", "--quiet", "--workers", "2"])
        data["code_mlm"] = work / "code"
    return data


def task_batches(argv: list[str], split: str, count: int) -> tuple[list[dict], int]:
    """The first ``count`` batches fairseq-train would take from ``split`` with these flags (its task, its
    batch iterator, its seed and epochs): collated samples, on the CPU; and the padding index."""
    from fairseq import options, tasks, utils  # --user-dir in argv registers our tasks and models
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset(split, combine=False, epoch=1)
    itr = task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), cfg.dataset.max_tokens),
        ignore_invalid_inputs=True, required_batch_size_multiple=1, seed=cfg.common.seed, num_shards=1,
        shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False)
    out = []
    while len(out) < count:  # train: epoch after epoch, as fairseq-train goes on; valid: one pass at most
        before = len(out)
        out += [b for _, b in zip(range(count - len(out)), itr.next_epoch_itr(shuffle=split == "train")) if b]
        if split != "train" or len(out) == before:
            break
    return out, task.source_dictionary.pad()


def hf_batch(sample: dict, pad: int) -> dict:
    """A collated fairseq sample -> transformers' inputs (labels: the target, pad and unmasked -> -100)."""
    src = sample["net_input"]["src_tokens"]
    batch = {"input_ids": src, "attention_mask": src.ne(pad).long(),
             "labels": sample["target"].masked_fill(sample["target"].eq(pad), -100)}
    if "prev_output_tokens" in sample["net_input"]:
        batch["decoder_input_ids"] = sample["net_input"]["prev_output_tokens"]
    return batch


def unmasked_blocks(batches: list[dict], pad: int) -> list[list[int]]:
    """Our masked blocks as they were before masking (the target where a token was masked): run_mlm's input."""
    import torch

    out = []
    for b in batches:
        src, tgt = b["net_input"]["src_tokens"], b["target"]
        out += [row[row.ne(pad)].tolist() for row in torch.where(tgt.ne(pad), tgt, src)]
    return out


# ---------------------------------------------------------------- the clock (both sides)

class UpdateClock:
    """The end time and non-pad input tokens of every update; tokens/s from the end of update K to the end of N."""

    def __init__(self, skip: int, updates: int, cuda: bool):
        self.skip, self.updates, self.cuda = skip, updates, cuda
        self.ends, self.cpu_ends = [], []  # wall and CPU (this process's, all threads) seconds at each update's end
        self.tokens, self.pending = [], []  # pending: counted by a collator, not yet trained on

    def end(self, tokens: int) -> None:
        if self.cuda and len(self.ends) + 1 in (self.skip, self.updates):
            import torch

            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.tokens.append(int(tokens))

    def totals(self) -> dict:
        k = self.skip
        timed = len(self.ends) > k
        seconds = self.ends[-1] - self.ends[k - 1] if timed else float("nan")
        cpu = self.cpu_ends[-1] - self.cpu_ends[k - 1] if timed else float("nan")
        counted = sum(self.tokens[k:])
        return {"updates": len(self.ends), "timed_updates": len(self.ends) - k, "timed_seconds": seconds,
                "timed_cpu_seconds": cpu, "timed_tokens": counted,
                "tokens_per_s": counted / seconds if seconds > 0 else float("nan"),
                "tokens_per_cpu_s": counted / cpu if cpu > 0 else float("nan"),
                "tokens_per_update": self.tokens, "peak_cuda_mb": cuda_peak_mb(self.cuda), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM: its memory since exec; a child's rusage would also count the RSS its
    parent had when it forked)."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def cuda_peak_mb(cuda: bool) -> float | None:
    if not cuda:
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def fairseq_worker(job: dict, argv: list[str]) -> None:
    """fairseq-train's own entry point (cli_main) with fairseq's Trainer.train_step on the clock."""
    import logging

    import torch
    from fairseq.trainer import Trainer
    from fairseq_cli.train import cli_main

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    torch.set_num_threads(job["threads"])
    clock = UpdateClock(job["skip"], job["updates"], job["cuda"])
    step = Trainer.train_step

    def timed(self, samples, raise_oom=False):
        pad = self.task.source_dictionary.pad()
        tokens = sum(int(x["net_input"]["src_tokens"].ne(pad).sum()) for x in samples if x)  # on the CPU still
        out = step(self, samples, raise_oom)
        clock.end(tokens)
        return out

    Trainer.train_step = timed
    sys.argv = ["fairseq-train", *argv]
    cli_main()
    Path(job["timing"]).write_text(json.dumps(clock.totals()))


# ---------------------------------------------------------------- theirs: transformers' side

def t5_mlm(encoder_dir: Path):
    """T5EncoderModel plus the LM head a user writes (our T5LMHead's: dense, GELU, T5 norm, the tied embeddings
    scaled by d^-1/2, a bias), the head's weights from ENCODER_DIR/lm_head.pt."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import T5EncoderModel
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    class T5ForMaskedLM(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder, d = encoder, encoder.config.d_model
            self.dense = nn.Linear(d, d)
            self.layer_norm = T5LayerNorm(d, eps=encoder.config.layer_norm_epsilon)
            self.bias = nn.Parameter(torch.zeros(encoder.config.vocab_size))

        def forward(self, input_ids, attention_mask=None, labels=None):
            x = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, C)
            x = self.layer_norm(F.gelu(self.dense(x), approximate="tanh")) * x.size(-1) ** -0.5
            logits = F.linear(x, self.encoder.shared.weight) + self.bias  # (B, T, V)
            loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
            return {"loss": loss, "logits": logits}

    model = T5ForMaskedLM(T5EncoderModel.from_pretrained(encoder_dir))
    model.load_state_dict(torch.load(encoder_dir / "lm_head.pt"), strict=False)
    return model


def hf_model(workload: str, directory: Path):
    """The transformers model of a workload, loaded from DIRECTORY (an export, or theirs after training)."""
    from transformers import BartForConditionalGeneration, RobertaForMaskedLM

    if workload == "code_mlm":
        return t5_mlm(directory)
    return (RobertaForMaskedLM if workload == "mlm" else BartForConditionalGeneration).from_pretrained(directory)


def save_hf(workload: str, model, out: Path) -> None:
    import torch

    if workload != "code_mlm":
        model.save_pretrained(out)
        return
    model.encoder.save_pretrained(out)
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}, out / "lm_head.pt")


def head_from_checkpoint(checkpoint: Path, out: Path) -> None:
    """Our T5 checkpoint's LM head (all but the tied weight) -> OUT/lm_head.pt in t5_mlm's names."""
    import torch

    from fairseq_ext.serialization import safe_torch_load

    weights = safe_torch_load(checkpoint, map_location="cpu")["model"]
    head = {k[len("lm_head."):]: v.float() for k, v in weights.items() if k.startswith("lm_head.")}
    head.pop("weight", None)  # the tied embeddings
    torch.save(head, out / "lm_head.pt")


def hf_worker(job: dict) -> None:
    """One Trainer training (job: workload, model, batches, out, threads, args, ...) -> its clock's totals."""
    import torch
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast, Trainer, TrainingArguments

    torch.set_num_threads(job["threads"])
    workload, pad = job["workload"], job["pad"]
    model = hf_model(workload, Path(job["model"]))
    clock = UpdateClock(job["skip"], job["updates"], job["cuda"])
    data = torch.load(job["batches"])
    if workload == "mlm":  # run_mlm.py: blocks of ids, its collator masks them, Trainer's sampler shuffles them
        tok = PreTrainedTokenizerFast.from_pretrained(job["tokenizer"])
        mlm = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
        dataset = [{"input_ids": ids} for ids in data]
        collate = mlm
    else:  # our collated batches, one a step
        dataset = data
        collate = lambda items: items[0]  # noqa: E731

    def counted(items):
        batch = collate(items)
        clock.pending.append(int(batch["input_ids"].ne(pad).sum()))
        return batch

    args = TrainingArguments(output_dir=str(Path(job["out"]).with_suffix(".trainer")), save_strategy="no",
                             report_to="none", logging_steps=10, disable_tqdm=True, dataloader_num_workers=0,
                             **job["args"])
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=counted,
            callbacks=[step_timer(clock)]).train()
    save_hf(workload, model, Path(job["out"]))
    Path(job["timing"]).write_text(json.dumps(clock.totals()))


def step_timer(clock: UpdateClock):
    """A TrainerCallback: the clock reads on_step_end (after the optimizer and scheduler step); the tokens were
    counted by the collator."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.end(clock.pending.pop(0))  # the collator may have fetched the next batch already

    return StepTimer()


# ---------------------------------------------------------------- the one evaluator, and the start check

def evaluate(workload: str, model_dir: Path, valid: list[dict], pad: int, device: str) -> float:
    """Mean cross-entropy (nats) of a transformers model over the target tokens of the fixed validation batches."""
    import torch
    import torch.nn.functional as F

    model = hf_model(workload, model_dir).to(device).float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in valid:
            batch = {k: v.to(device) for k, v in hf_batch(sample, pad).items()}
            labels = batch.pop("labels")
            logits = model(**batch)["logits"]  # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum").item()
            count += int(labels.ne(-100).sum())
    return total / count


def fairseq_loss(checkpoint: Path, data: Path, valid: list[dict], device: str) -> float:
    """The same figure from the fairseq model itself (its task's criterion): the start check's other side."""
    import torch
    from fairseq import checkpoint_utils, utils

    import fairseq_ext  # noqa: F401

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                      arg_overrides={"data": str(data)})
    model, criterion = models[0].float().eval().to(device), task.build_criterion(cfg.criterion)
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in valid:
            loss, size, _ = criterion(model, utils.move_to_cuda(sample) if device == "cuda" else sample)
            total, count = total + float(loss), count + int(size)
    return total / count


# ---------------------------------------------------------------- one workload

def start_weights(name: str, base: list, s: Setup, w: Path) -> Path:
    """Ours built and saved unchanged (one update at lr 0), exported for theirs -> the checkpoint."""
    run([BIN / "fairseq-train", *base, *train_flags(replace(s, precision="fp32"), 0.0, 1),
         "--save-dir", w / "init"], w / "init.log", threads_env(s))
    checkpoint = w / "init" / "checkpoint_last.pt"
    export(name, checkpoint, w / "init-hf")
    return checkpoint


def export(name: str, checkpoint: Path, out: Path) -> None:
    """`fairseq-ext export-hf` (in this process: its function, parity check included); T5's head beside it."""
    from fairseq_ext.convert.export import export_hf

    export_hf(checkpoint, out)
    if name == "code_mlm":
        head_from_checkpoint(checkpoint, out)


def train_ours(argv: list, init: Path, s: Setup, w: Path, tag: str) -> dict:
    job = {"timing": str(w / f"ours{tag}.timing.json"), "threads": s.threads, "skip": s.skip, "updates": s.updates,
           "cuda": s.device == "cuda"}
    (w / f"ours{tag}.job.json").write_text(json.dumps(job))
    measured([sys.executable, __file__, "--fairseq-worker", w / f"ours{tag}.job.json", *argv, "--restore-file", init,
              "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
              "--save-dir", w / f"ours{tag}-ckpt"], w / f"ours{tag}.log", threads_env(s))
    return {**json.loads((w / f"ours{tag}.timing.json").read_text()), "checkpoint": str(w / f"ours{tag}-ckpt")}


def train_theirs(name: str, s: Setup, w: Path, pad: int, tokenizer: Path, tag: str) -> dict:
    job = {"workload": name, "model": str(w / "init-hf"), "batches": str(w / "batches.pt"), "pad": pad,
           "out": str(w / f"theirs{tag}-hf"), "timing": str(w / f"theirs{tag}.timing.json"),
           "tokenizer": str(tokenizer), "threads": s.threads, "skip": s.skip, "updates": s.updates,
           "cuda": s.device == "cuda", "args": trainer_args(s, name)}
    (w / f"theirs{tag}.job.json").write_text(json.dumps(job))
    measured([sys.executable, __file__, "--hf-worker", w / f"theirs{tag}.job.json"], w / f"theirs{tag}.log",
             threads_env(s))
    return {**json.loads((w / f"theirs{tag}.timing.json").read_text()), "model": job["out"]}


def trainings(name: str, argv: list, init: Path, s: Setup, w: Path, pad: int, tokenizer: Path) -> tuple[dict, dict]:
    """Each side --repeats times, alternating (theirs, ours, theirs, ...), so that the machine's load falls on both
    alike; the fastest run of each side is kept (every run's figures under "runs")."""
    runs = {"ours": [], "theirs": []}
    for r in range(s.repeats):
        runs["theirs"].append(train_theirs(name, s, w, pad, tokenizer, f"-{r}"))
        runs["ours"].append(train_ours(argv, init, s, w, f"-{r}"))
    best = {side: dict(max(rs, key=lambda x: x["tokens_per_s"])) for side, rs in runs.items()}
    for side in best:
        best[side]["runs"] = [{k: x[k] for k in ("tokens_per_s", "tokens_per_cpu_s", "timed_seconds")}
                              for x in runs[side]]
    return best["ours"], best["theirs"]


def workload(name: str, data: Path, s: Setup, work: Path, extra: list[str]) -> dict:
    """Both trainings of one workload and their figures."""
    import torch

    w = work / name
    w.mkdir(parents=True, exist_ok=True)
    base = [data, "--user-dir", REPO / "fairseq_ext", *model_flags(name, s)]
    init = start_weights(name, base, s, w)
    argv = [str(x) for x in (*base, *train_flags(s), *extra)]
    train, pad = task_batches(argv, "train", s.updates)
    valid, _ = task_batches(argv, "valid", s.valid_batches)
    torch.save(unmasked_blocks(train, pad) if name == "mlm" else [hf_batch(b, pad) for b in train], w / "batches.pt")
    start = {"fairseq": fairseq_loss(init, data, valid, s.device),
             "evaluator": evaluate(name, w / "init-hf", valid, pad, s.device)}
    print(f"{name}: start check: fairseq {start['fairseq']:.6f}, evaluator on the export {start['evaluator']:.6f}",
          flush=True)
    ours, theirs = trainings(name, argv, init, s, w, pad, work / "tok")
    export(name, Path(ours["checkpoint"]) / "checkpoint_last.pt", w / "ours-hf")
    for r, model in ((ours, w / "ours-hf"), (theirs, Path(theirs["model"]))):
        r["valid_loss"] = evaluate(name, model, valid, pad, s.device)
    params = sum(p.numel() for p in hf_model(name, w / "init-hf").parameters())
    return {"ours": ours, "theirs": theirs, "start": start, "params": params,
            "valid_tokens": sum(int(b["target"].ne(pad).sum()) for b in valid)}


# ---------------------------------------------------------------- the report

def peak_tflops(s: Setup, given: float | None) -> float | None:
    if given or s.device != "cuda":
        return given
    import torch

    name = torch.cuda.get_device_name()
    return next((t.get(s.precision) for gpu, t in PEAK_TFLOPS.items() if gpu in name), None)


def figures(name: str, r: dict, peak: float | None) -> dict:
    """The ratios and verdicts of one workload (added to its record)."""
    ours, theirs = r["ours"], r["theirs"]
    out = {"speed_ratio": ours["tokens_per_s"] / theirs["tokens_per_s"],
           "cpu_speed_ratio": ours["tokens_per_cpu_s"] / theirs["tokens_per_cpu_s"],
           "loss_rel_diff": (ours["valid_loss"] - theirs["valid_loss"]) / theirs["valid_loss"],
           "start_abs_diff": abs(r["start"]["fairseq"] - r["start"]["evaluator"]),
           "same_tokens_per_update": ("same order" if ours["tokens_per_update"] == theirs["tokens_per_update"] else
                                      "same batches" if sorted(ours["tokens_per_update"]) ==
                                      sorted(theirs["tokens_per_update"]) else "differ")}
    if peak:
        for side in ("ours", "theirs"):
            out[f"mfu_{side}"] = 6 * r["params"] * r[side]["tokens_per_s"] / (peak * 1e12)
    return out


def report(results: dict[str, dict], s: Setup) -> list[str]:
    mem = "peak CUDA MB" if s.device == "cuda" else "peak RSS MB"
    lines = [f"| workload | ours tokens/s | theirs tokens/s | ours/theirs | ours {mem} | theirs {mem} "
             "| ours valid loss | theirs valid loss | loss (ours - theirs) / theirs | start check |",
             "|---|" + "---:|" * 9]
    for name, r in results.items():
        o, t, f = r["ours"], r["theirs"], r["figures"]
        memory = [x["peak_cuda_mb"] if s.device == "cuda" else x["peak_rss_mb"] for x in (o, t)]
        lines.append(f"| {name} | {o['tokens_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | {f['speed_ratio']:.2f}x | "
                     f"{memory[0]:,.0f} | {memory[1]:,.0f} | {o['valid_loss']:.4f} | {t['valid_loss']:.4f} | "
                     f"{100 * f['loss_rel_diff']:+.2f}% | {f['start_abs_diff']:.1e} |")
    lines.append("")
    for name, r in results.items():
        f = r["figures"]
        speed_ok = "met" if f["speed_ratio"] >= GOAL_SPEED else "NOT met"
        loss_ok = "met" if abs(f["loss_rel_diff"]) <= GOAL_LOSS else "NOT met"
        if s.updates < JUDGED_UPDATES:  # --quick: a smoke test, its clock holds a handful of updates
            speed_ok = loss_ok = f"not judged, {s.updates} updates"
        mfu = (f", MFU ours {100 * f['mfu_ours']:.1f}% theirs {100 * f['mfu_theirs']:.1f}%" if "mfu_ours" in f
               else "")
        lines.append(f"{name}: ours/theirs tokens/s {f['speed_ratio']:.2f}x (goal >= {GOAL_SPEED}x: {speed_ok}); "
                     f"valid loss {100 * f['loss_rel_diff']:+.2f}% (goal within {100 * GOAL_LOSS:.0f}%: {loss_ok}); "
                     f"tokens per update: {f['same_tokens_per_update']}{mfu}; per CPU second: "
                     f"{f['cpu_speed_ratio']:.2f}x")
    return lines


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=0, help="updates of each training (default 30; --quick 6)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="which of mlm,denoising,code_mlm (all)")
    p.add_argument("--repeats", type=int, default=0,
                   help="trainings of each side, alternating; the fastest counts (default 2; --quick 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="cuda only")
    p.add_argument("--size", choices=["cpu", "base"], default="cpu")
    p.add_argument("--peak-tflops", type=float, help="the accelerator's peak TFLOP/s at --precision (for MFU)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of every process (%(default)s)")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--work", type=Path,
                   help="working directory, emptied first and kept (default: a temporary one, removed)")
    p.add_argument("--ours-flags", help="extra fairseq-train flags for ours, e.g. '--compile-model'")
    p.add_argument("--quick", action="store_true", help="tiny models, a few updates (the test's run)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[str]:
    """The workloads asked for, or exit with a one-line error naming the setting."""
    work = args.work  # deleted and made afresh by the run: never a directory of the user's
    if work is not None and work.exists() and (not work.is_dir() or (any(work.iterdir())
                                                                   and not (work / MARKER).exists())):
        sys.exit(f"--work {work}: not an empty directory nor one this script made (no {MARKER}); give a new one")
    names = [x.strip() for x in args.workloads.split(",") if x.strip()]
    bad = [x for x in names if x not in WORKLOADS]
    if bad or not names:
        sys.exit(f"--workloads: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(WORKLOADS)}")
    if args.updates and args.updates < 4:
        sys.exit(f"--updates: {args.updates} is too few (at least 4: the first are left out of the clock)")
    if args.repeats < 0:
        sys.exit(f"--repeats: {args.repeats} is negative")
    if args.threads < 1:
        sys.exit(f"--threads: {args.threads}; at least 1")
    if args.quick and args.size != "cpu":
        sys.exit("--quick: tiny models of the cpu size; not with --size base")
    if args.device == "cpu" and args.precision != "fp32":
        sys.exit(f"--precision {args.precision}: only with --device cuda")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
    return names


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--fairseq-worker"], ["--hf-worker"]):
        job = json.loads(Path(argv[1]).read_text())
        fairseq_worker(job, argv[2:]) if argv[0] == "--fairseq-worker" else hf_worker(job)
        return 0
    args = parse_args(argv)
    names, s = check_args(args), setup_from(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="vs-transformers-"))
    started = time.perf_counter()
    try:
        shutil.rmtree(work, ignore_errors=True)  # empty, or made by this script (check_args): start afresh
        work.mkdir(parents=True)
        (work / MARKER).write_text("made by benchmarks/vs_transformers.py: --work deletes it at the next run\n")
        extra = speed_flags(args.ours_flags)
        print(f"setup: {json.dumps(asdict(s))}\nours' extra flags: {' '.join(extra) or '(none)'}", flush=True)
        data = prepare(work, s, names)
        peak = peak_tflops(s, args.peak_tflops)
        results = {}
        for name in names:
            results[name] = workload(name, data[name], s, work, extra)
            results[name]["figures"] = figures(name, results[name], peak)
        lines = report(results, s)
        print("\n" + "\n".join(lines) + f"\n\nwhole run: {time.perf_counter() - started:.0f} s", flush=True)
        if args.json:
            write_json(args.json, {"setup": asdict(s), "extra_flags": extra, "peak_tflops": peak,
                                   "results": results, "report": lines,
                                   "seconds": time.perf_counter() - started})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def write_json(path: Path, record: dict) -> None:
    from fairseq_ext.io_utils import write_file_atomically

    text = json.dumps(record, indent=1, default=str, allow_nan=True)
    write_file_atomically(path, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    sys.exit(main())
