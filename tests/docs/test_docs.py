"""The code blocks of the README and of every page in docs/, run as written (as x-transformers'
``test_readme`` does).

Every fenced ```bash block is split into commands and every ```python block is a script; each one is
run, page after page in the order of ``support.docs.PAGES`` (the README first) and in page order within
a page, in one working directory that stands for the repository root (it links ``fairseq_ext/`` and
``scripts/``) and holds small inputs under the names the pages use (``books/``, ``tweets.txt``,
``my-bert`` ...). Commands are changed only by the explicit run-size overrides below (fewer updates, a
tiny model, CPU); a command a page changes so that an override no longer applies fails here. A command
not run is listed in ``NOT_RUN`` with the reason, so a new block cannot escape; a page in docs/ that
``PAGES`` does not list fails here too.

Conventions of the pages relied on:
* commands are written to run from the repository root; a line ending in ``\\`` continues the command,
  `` # ...`` is a comment, each other line is one command;
* a trailing ``...`` means "and the rest of your flags": ``FILL`` supplies them per command;
* an example that writes (``-o``) where an earlier one already wrote, without ``--overwrite``, is an
  alternative to it: it runs in a side directory that links everything else (so does the command
  reference's repeat of a recipe's command);
* blocks without a language tag are not code and hold no command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_text
from support.docs import PAGES, Block, block_commands, doc_blocks, page_text

BIN = Path(sys.executable).parent

# Commands not run, by prefix, and why. A prefix that matches no documented command is an error (stale).
NOT_RUN = {
    "bash scripts/demo.sh": "sets up a virtualenv and runs the ~9 minute demo; tests/e2e/test_demo.py runs "
                            "`fairseq-ext demo` shrunk",
    "bash scripts/test.sh": "runs this test suite itself",
    "bash scripts/gpu_check.sh --device cpu": "its CPU rehearsal: tests/gpu/test_gpu_check.py runs it (two tasks) "
                                             "and checks its JSON",
    "bash scripts/gpu_check.sh": "needs a GPU (6 minutes); tests/gpu/test_gpu_check.py runs it with --device cpu",
    "GPU_CHECK_JSON=": "the GPU check again, with another report path (needs a GPU)",
    "fairseq-ext demo": "minutes of training; tests/e2e/test_demo.py runs the same verb with fewer updates",
    "HF_MODEL=path/to/bert-large-uncased": "tests/e2e/test_continue_pretraining_e2e.py runs "
                                           "scripts/continue_pretraining.sh on a tiny BERT",
    "pip install": "installs into the environment running the tests; tests/test_install.py installs torch, "
                   "then `pip install -e` the repository, in a fresh virtualenv",
}

# Run-size overrides. SET: the flag must be in the command and gets this value; DROP: removed where
# present; TINY: appended to a command naming that --arch (or hydra --config-name); every training
# command also gets RUN_ON_CPU.
TRAIN_SET = {"--max-update": "2"}
TRAIN_DROP = ["--fp16"]
RUN_ON_CPU = ["--cpu", "--num-workers", "0"]
TINY = {
    "bart_small": ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                   "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                   "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"],
    "roberta_small": ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                      "--encoder-attention-heads", "2"],
    "t5_encoder_small": ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--kv-dim", "8",
                         "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4"],
}
HYDRA_SET = {"optimization.max_update": "4"}  # it resumes the bart_small run above (2 updates) in checkpoints/
HYDRA_APPEND = {
    "pretrain_bart": ["common.cpu=true", "dataset.num_workers=0"] + [
        f"+model.{k}={v}" for k, v in dict(encoder_layers=1, decoder_layers=1, encoder_embed_dim=32,
                                           decoder_embed_dim=32, encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64,
                                           encoder_attention_heads=2, decoder_attention_heads=2).items()],
}
# What a trailing `...` stands for, by command prefix.
FILL = {
    "fairseq-train data-bin-domain": ["--optimizer", "adam", "--lr", "1e-4", "--max-update", "2",
                                      "--max-tokens", "2048", "--save-dir", "checkpoints-domain"],
    "fairseq-train data-bin-bert": ["--optimizer", "adam", "--lr", "1e-4", "--max-update", "2",
                                    "--batch-size", "8", "--save-dir", "checkpoints-bert"],
    # the tests' tiny T5 SentencePiece has no <extra_id_0> sentinel (a real T5's has): name a mask token
    "fairseq-train code-data-t5": ["--mask-token", "'<unk>'", "--tokens-per-sample", "64", "--optimizer", "adam",
                                   "--lr", "1e-4", "--max-update", "2", "--max-tokens", "1024",
                                   "--save-dir", "checkpoints-t5"],
}
CODE_PACKAGES = ("json", "html", "http", "urllib", "email")  # src/: one project per stdlib package


def _set_flag(command: str, flag: str, value: str) -> str:
    pattern = rf"(?<=\s){re.escape(flag)}(?:\s+|=)\S+"
    assert re.search(pattern, command), f"override {flag} no longer applies to: {command}"
    return re.sub(pattern, f"{flag} {value}", command)


def runnable(command: str) -> str:
    """The command with its run-size overrides applied (only fairseq-train / fairseq-hydra-train change)."""
    words = command.split()
    if words[0] == "fairseq-train":
        if command.endswith("..."):
            fill = [v for k, v in FILL.items() if command.startswith(k)]
            assert len(fill) == 1, f"no FILL entry for the '...' of: {command}"
            command = command[:-3].rstrip() + " " + " ".join(fill[0])
        for flag, value in TRAIN_SET.items():
            command = _set_flag(command, flag, value)
        for flag in TRAIN_DROP:
            command = re.sub(rf"\s{re.escape(flag)}(?=\s|$)", "", command)
        arch = re.search(r"\s--arch\s+(\S+)", command)
        extra = TINY[arch.group(1)] if arch else []  # sizes from model_args.txt (an import) are kept
        return " ".join([command, *extra, *RUN_ON_CPU])
    if words[0] == "fairseq-hydra-train":
        name = re.search(r"--config-name\s+(\S+)", command).group(1)
        assert name in HYDRA_APPEND, f"no run-size overrides for hydra config {name!r}"
        for key, value in HYDRA_SET.items():
            command += f" {key}={value}"  # hydra: a later override of a key wins
        return " ".join([command, *HYDRA_APPEND[name]])
    return command


def not_run_reason(command: str) -> str | None:
    reasons = [why for prefix, why in NOT_RUN.items() if command.startswith(prefix)]
    return reasons[0] if reasons else None


def plan() -> list[tuple[Block, str, str | None]]:
    """(block, command or script, reason not run) for every block, in the order of PAGES."""
    steps = []
    for block in doc_blocks():
        if block.lang in ("bash", "sh", "shell", "console"):
            steps += [(block, c, not_run_reason(c)) for c in block_commands(block)]
        elif block.lang == "python":
            steps.append((block, block.text, None))
        else:
            assert block.lang in ("", "text"), f"{block.where}: no rule for ```{block.lang} blocks"
            first_words = {ln.split()[0] for ln in block.text.splitlines() if ln.strip()}
            assert not first_words & {"fairseq-ext", "fairseq-train", "fairseq-hydra-train", "bash", "python",
                                      "pip", "sbatch"}, f"{block.where}: commands in an untagged block"
    return steps


def test_every_block_is_run_or_listed_with_a_reason():
    """Quick (no training): the plan covers the pages, the skip list is not stale, overrides apply."""
    steps = plan()
    assert sum(1 for _b, _c, why in steps if why is None) >= 15
    for prefix in NOT_RUN:
        assert any(c.startswith(prefix) for _b, c, _w in steps), f"NOT_RUN entry matches nothing: {prefix}"
    for fill in FILL:
        assert any(c.startswith(fill) and c.endswith("...") for _b, c, _w in steps), f"stale FILL: {fill}"
    trains = [runnable(c) for _b, c, why in steps if why is None and c.split()[0].startswith("fairseq-")
              and "train" in c.split()[0]]
    assert len(trains) >= 5
    for command in trains:
        assert "..." not in command and "--fp16" not in command.split()
        assert re.search(r"(--max-update 2|optimization.max_update=4)\b", command), command


def test_every_page_is_run_in_a_stated_order_and_linked_from_the_readme():
    """A page in docs/ that PAGES does not list would never run; the README is where a reader starts."""
    assert PAGES[0] == "README.md" and len(set(PAGES)) == len(PAGES)
    assert set(PAGES[1:]) == {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", page_text("README.md")))
    assert linked == set(PAGES[1:])


def test_the_command_reference_has_an_example_of_every_verb():
    from fairseq_ext.cli.main import VERBS

    examples = {c.split()[1] for b, c, _why in plan() if b.page == "docs/commands.md" and c.startswith("fairseq-ext ")}
    assert examples == set(VERBS)


def heading_anchors(page: str) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces -> '-')."""
    anchors, fenced = set(), False
    for line in page_text(page).splitlines():
        if re.match(r"^\s*```", line):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#{1,6}\s+(.*?)\s*$", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            anchors.add(next(f"{slug}-{n}" if n else slug for n in range(100)
                             if (f"{slug}-{n}" if n else slug) not in anchors))
    return anchors


def test_links_between_pages_resolve():
    """Every relative link names a file of the repository, and its #anchor a heading of that page."""
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page_text(page)):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (REPO / page).parent / path if path else REPO / page
            assert resolved.resolve().is_relative_to(REPO) and resolved.exists(), f"{page}: no such file: {target}"
            if anchor:
                rel = resolved.resolve().relative_to(REPO).as_posix()
                assert anchor in heading_anchors(rel), f"{page}: no heading #{anchor} in {rel}"
            checked += 1
    assert checked >= 20


# Inputs the pages name, made small here (the pages' own commands make everything else).
def make_inputs(root: Path, bert_dir: Path, spm_model: Path) -> None:
    import sysconfig

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, T5ForConditionalGeneration

    from support.hf_models import t5_dir
    from support.st_models import bert_st_dir

    def write(path, lines):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def documents(n_docs, seed, sentences=5):
        lines = []
        for d in range(n_docs):
            lines += make_text(sentences, seed=seed * 1000 + d) + [""]
        return lines

    for i in range(6):  # books/: one book a file, paragraphs between blank lines
        write(root / "books" / f"book{i}.txt", documents(12, seed=i, sentences=6))
    write(root / "web1.txt", documents(40, seed=10))
    write(root / "web2.txt", documents(40, seed=11))
    write(root / "a.txt", make_text(200, seed=12))
    write(root / "b.txt", make_text(200, seed=13))
    write(root / "domain.txt", documents(30, seed=14))
    write(root / "domain-valid.txt", documents(4, seed=15))
    write(root / "tweets.txt", [f"@user{i} {line} https://t.co/{i} &amp; \U0001F602" for i, line in
                                enumerate(make_text(200, seed=16))])
    write(root / "tweets-valid.txt", make_text(20, seed=17))
    for name in ("bert-dir", "bert-base-uncased-dir"):
        shutil.copytree(bert_dir, root / name)
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=512))
    model.save_pretrained(root / "my-bert")
    tok.save_pretrained(root / "my-bert")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for pkg in CODE_PACKAGES:
        shutil.copytree(stdlib / pkg, root / "src" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "my-t5").mkdir()
    t5_dir(root / "my-t5", spm_model, "gated-gelu", T5ForConditionalGeneration)
    bert_st_dir(root / "my-sentence-encoder", bert_dir, normalize=True)  # all-MiniLM-L6-v2's modules, tiny
    for name in ("fairseq_ext", "scripts"):  # the repository root, as the pages' commands expect
        (root / name).symlink_to(REPO / name)


def output_of(command: str) -> str | None:
    found = re.search(r"\s(?:-o|--output)\s+(\S+)", command)
    part = re.search(r"\s--shard-index\s+(\d+)", command)  # binarize of one part writes DIR/shardK, beside the others
    return None if not found else f"{found.group(1)}/shard{part.group(1)}" if part else found.group(1)


def side_directory(root: Path, output: str) -> Path:
    """A directory linking everything of ``root`` but ``output``: for an alternative example."""
    side = root.parent / f"{root.name}-alt-{len(list(root.parent.glob(root.name + '-alt-*')))}"
    side.mkdir()
    for entry in root.iterdir():
        if entry.name != Path(output).parts[0]:
            (side / entry.name).symlink_to(entry)
    return side


@pytest.mark.slow
def test_documented_code_blocks_run(tmp_path, bert_dir, spm_model):
    root = tmp_path / "repo"
    root.mkdir()
    make_inputs(root, bert_dir, spm_model)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    ran = []
    for block, command, why in plan():
        if why is not None:
            continue
        if block.lang == "python":
            argv, cwd, shown = [sys.executable, "-c", command], root, f"python block at {block.where}"
        else:
            command = runnable(command)
            output = output_of(command)
            alternative = output and (root / output).exists() and "--overwrite" not in command.split()
            cwd = side_directory(root, output) if alternative else root
            argv, shown = ["bash", "-c", "set -euo pipefail\n" + command], f"{block.where}: {command}"
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        log = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, f"{shown}\nfailed with exit {proc.returncode}:\n{log}"
        ran.append(shown)
    # what the run made, checked where the pages promise it
    for path in ("data/prepare.json", "tok/tokenizer.json", "data-bin/train.bin", "checkpoints/checkpoint_best.pt",
                 "checkpoints-mlm/checkpoint_last.pt", "my-bart/model.safetensors", "my-roberta/config.json",
                 "my-roberta-as-bert/config.json", "bart-start/model_args.txt", "checkpoints-domain/checkpoint_last.pt",
                 "bert-start/checkpoint.pt", "checkpoints-bert/checkpoint_last.pt", "code-data/dataset_dict.json",
                 "code-data/train.idx", "my-code-t5/model.safetensors", "t5-start/checkpoint.pt",
                 "my-code-t5-continued/config.json", "tok-t5/tokenizer.json", "data-shards/shard2/train.idx",
                 "data-parts/shard2/train.idx",
                 "ckpt-shards/checkpoint_last.pt", "data-bin-classic/train.bin", "code-search-st/modules.json",
                 "eval.json", "st-start/checkpoint.pt", "my-sentence-encoder-tuned/modules.json"):
        assert (root / path).exists(), path
    # conversion.md: a sentence-transformers directory and its import rank the pairs alike
    st, imported = (json.loads((root / f).read_text())["pool"]["scores"] for f in ("eval-st.json",
                                                                                    "eval-st-start.json"))
    for name, figures in st.items():
        assert imported[name] == pytest.approx(figures, abs=1e-6), name
    assert len(ran) >= 15
