"""Tiny tokenizers of every family and small texts, all made here (no downloads)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fairseq_ext  # noqa: F401  (first: hides a torchaudio that cannot load before any test imports transformers)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's commands

WORDS = (
    "the quick brown fox jumps over lazy dog while a patient teacher explains tokenizers to "
    "curious students who write programs and read books about language models every evening"
).split()


def make_text(n_lines: int = 300, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", "!", "?"]))
    return lines


def documents_text(n_lines: int, seed: int) -> str:
    """make_text's sentences, one a line, a blank line after every 4th: documents of 4 sentences."""
    return "\n".join(ln + ("\n" if i % 4 == 3 else "") for i, ln in enumerate(make_text(n_lines, seed=seed))) + "\n"


def binarized_documents(root: Path, tokenizer, n_lines: int, seed: int, max_line_tokens: int = 62) -> Path:
    """``documents_text`` written to ROOT/t.txt and binarized as train and valid into ROOT/bin."""
    from fairseq_ext.prep.binarize_dir import binarize_directory

    (root / "t.txt").write_text(documents_text(n_lines, seed), encoding="utf-8")
    binarize_directory(tokenizer, {"train": root / "t.txt", "valid": root / "t.txt"}, root / "bin",
                       max_line_tokens=max_line_tokens, progress=False)
    return root / "bin"


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(make_text()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory, text_file) -> Path:
    """Byte-level BPE with RoBERTa/BART specials at 0-4, trained by our trainer."""
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    out = tmp_path_factory.mktemp("bpe")
    train_tokenizer([text_file], kind="bpe", vocab_size=400, min_frequency=1, show_progress=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def unigram_dir(tmp_path_factory, text_file) -> Path:
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    out = tmp_path_factory.mktemp("unigram")
    train_tokenizer([text_file], kind="unigram", vocab_size=150, show_progress=False).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    """A BERT-layout WordPiece vocabulary: [PAD]=0, [unused*], [UNK]=100 ... [MASK]=103."""
    import transformers

    out = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [".", "!", "?", ",", "<", ">", "/", "[", "]", "s"] + sorted(set(WORDS))
    vocab += ["##s", "##ing", "##er", "t", "##h", "##e", "m", "##a", "##k"]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if int(transformers.__version__.split(".")[0]) >= 5:
        tok = transformers.BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True)
    else:  # transformers 4.x
        tok = transformers.BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory, text_file) -> Path:
    """A T5-layout SentencePiece model: <pad>=0, </s>=1, <unk>=2, no bos."""
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(out / "t5"), vocab_size=100, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, user_defined_symbols=["<mask>"],
        minloglevel=2,
    )
    return out / "t5.model"


def fairseq_ext_command() -> list[str]:
    """The installed ``fairseq-ext`` script beside this Python (else ``python -m``)."""
    script = Path(sys.executable).parent / "fairseq-ext"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fairseq_ext.cli.main"]


def run_cli(*args: str, check: bool = True, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``fairseq-ext`` as a user would, in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [*fairseq_ext_command(), *args],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fairseq-ext {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def error_lines(stderr: str) -> list[str]:
    """The non-blank lines of stderr: a verb's failure is exactly one of them."""
    return [ln for ln in stderr.splitlines() if ln.strip()]


def model_card_rows(text: str) -> dict[str, str]:
    """The ``| field | value |`` rows of a model card written by export-hf."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) == 2 and cells[0] and not set(cells[0]) <= {"-", " "}:
            rows[cells[0]] = cells[1]
    return rows


def shell(cmd: list[str], env: dict, cwd=REPO, check: bool = True) -> str:
    """Run as a user whose shell has the virtualenv's commands on PATH; ``check=False``: it must fail."""
    full = dict(os.environ, **env)
    full["PATH"] = f"{env.get('PATH_PREFIX', BIN)}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full)
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == check, log[-4000:]
    return log


@pytest.fixture(scope="session")
def slurm(request):
    """A real Slurm on localhost (support/slurm_cluster.py), installed with apt when missing; stopped at the end."""
    from support.slurm_cluster import SlurmCluster, ensure_installed

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reason = ensure_installed()  # its progress lines ("installing slurm-wlm munge ...") show at once
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used the Slurm fixture reports the daemons' logs too."""
    report = (yield).get_result()
    cluster = getattr(item, "funcargs", {}).get("slurm")
    if report.failed and cluster is not None:
        report.sections.append(("Slurm daemon logs", cluster.logs()))


# --- contrastive code search: one tiny trained model, shared by the tests of training, export, evaluation ----

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CONTRASTIVE_PACKAGES = ("json", "email", "html", "http", "urllib", "logging", "concurrent", "xmlrpc", "wsgiref",
                        "importlib", "asyncio", "collections", "unittest")
TINY_T5_ARGS = ["--arch", "t5_encoder_small", "--encoder-layers", "2", "--encoder-embed-dim", "64", "--kv-dim", "16",
                "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4", "--cpu", "--num-workers", "0",
                "--seed", "1"]
CONTRASTIVE_ARGS = ["--task", "code_contrastive", "--criterion", "info_nce", *TINY_T5_ARGS,
                    "--max-query-tokens", "32", "--max-key-tokens", "64", "--pooler-dim", "32", "--learn-temperature"]


@pytest.fixture(scope="session")
def code_pairs_dir(tmp_path_factory) -> Path:
    """Docstring pairs of the standard library's top-level modules and some packages, split by file, with
    a 4,000-token BPE tokenizer trained on the same code."""
    import shutil

    root = tmp_path_factory.mktemp("stdlib-pairs")
    src = root / "Lib"
    src.mkdir()
    for module in STDLIB.glob("*.py"):
        shutil.copy(module, src / module.name)
    for package in CONTRASTIVE_PACKAGES:
        shutil.copytree(STDLIB / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "test*"))
    run_cli("train-tokenizer", "-i", str(src), "--languages", "python", "-o", str(root / "tok"), "--kind", "bpe",
            "--vocab-size", "4000")
    run_cli("code-pairs", str(src), "-o", str(root / "pairs"), "--tokenizer", str(root / "tok"), "--languages",
            "python", "--kind", "docstring", "--split-by", "file", "--valid-ratio", "0.1", "--quiet")
    return root / "pairs"


@pytest.fixture(scope="session")
def contrastive_checkpoint(tmp_path_factory, code_pairs_dir):
    """A t5_encoder trained by code_contrastive for 150 updates (about 40 s): (checkpoint_best.pt, pairs dir,
    fairseq-train's log). Pooler projection to 32, learned temperature, one tower; validated every 50 updates."""
    from types import SimpleNamespace

    from support.training import fairseq_train

    root = tmp_path_factory.mktemp("contrastive")
    save = root / "checkpoints"
    log = fairseq_train(code_pairs_dir, "--user-dir", "fairseq_ext", *CONTRASTIVE_ARGS,
                        "--optimizer", "adam", "--lr", "5e-3", "--lr-scheduler", "polynomial_decay",
                        "--warmup-updates", "20", "--total-num-update", "150", "--max-update", "150",
                        "--max-tokens", "6000", "--log-interval", "10", "--save-dir", save,
                        "--validate-interval-updates", "50", "--save-interval-updates", "50",
                        "--validate-interval", "1000", "--save-interval", "1000", "--no-epoch-checkpoints",
                        "--tensorboard-logdir", root / "tensorboard",
                        "--best-checkpoint-metric", "mrr", "--maximize-best-checkpoint-metric")
    return SimpleNamespace(checkpoint=save / "checkpoint_best.pt", pairs=code_pairs_dir, log=log,
                           tensorboard=root / "tensorboard")


@pytest.fixture(scope="session")
def two_tower_run(tmp_path_factory, code_pairs_dir):
    """4 updates of code_contrastive on 2 torchrun CPU ranks with separate towers, symmetric loss, a queue,
    gradient caching and a learned temperature (validated at the end): (save dir, pairs dir, log)."""
    from types import SimpleNamespace

    from support.training import fairseq_train

    save = tmp_path_factory.mktemp("two-towers") / "checkpoints"
    log = fairseq_train(code_pairs_dir, "--user-dir", "fairseq_ext", *CONTRASTIVE_ARGS, "--separate-towers",
                        "--symmetric", "--queue-size", "64", "--grad-cache-chunk", "16", "--optimizer", "adam",
                        "--lr", "1e-3", "--max-update", "4", "--max-tokens", "3000", "--log-interval", "1",
                        "--save-dir", save, "--no-epoch-checkpoints", "--validate-interval-updates", "4",
                        "--best-checkpoint-metric", "mrr", "--maximize-best-checkpoint-metric",
                        launcher=[BIN / "torchrun", "--standalone", "--nproc-per-node", "2"], timeout=300)
    return SimpleNamespace(save_dir=save, pairs=code_pairs_dir, log=log)


@pytest.fixture(scope="module")
def text_data(tmp_path_factory, bpe_dir):
    root = tmp_path_factory.mktemp("bf16-text")
    (root / "train.txt").write_text("\n".join(make_text(400, seed=21)) + "\n", encoding="utf-8")
    (root / "valid.txt").write_text("\n".join(make_text(40, seed=22)) + "\n", encoding="utf-8")
    run_cli("binarize", "--tokenizer", str(bpe_dir), "--train", str(root / "train.txt"), "--valid",
            str(root / "valid.txt"), "-o", str(root / "bin"), "--max-line-tokens", "62", "--quiet")
    return root / "bin"
