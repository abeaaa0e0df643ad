"""kill -9 a real `binarize`, `code-dataset` and `export-hf` at moments spread over its writing: what is left at
the output path is nothing or a complete, loadable output (the old one or the new one when replacing), nothing
beside it looks like an output, and the same command run again succeeds and removes what the killed runs left.

Each verb: a first full run (measuring when its temporary appears and when the output does), kills at seeded
moments inside that window, the same command again; then the same for --overwrite with other settings, and (not
for export-hf, whose runs are mostly imports) one kill as soon as the new output is in place, while the old one
is being removed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, fairseq_ext_command
from fairseq_ext.io_utils import leftovers

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PACKAGES = ("email", "json", "http", "urllib", "xml", "logging", "concurrent", "importlib")  # 1.8 MB
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@dataclass
class Run:
    rc: int
    log: str
    pid: int
    tmp_at: float | None  # seconds from the start until its temporary appeared beside the output
    out_at: float | None  # ... until the output was in place


def inode(path: Path) -> int | None:
    return path.stat().st_ino if path.exists() else None


def run(cmd: list[str], out: Path, kill_after_tmp: float | None = None, kill_when_in_place: bool = False) -> Run:
    """Run ``cmd``; kill -9 it ``kill_after_tmp`` seconds after its temporary appears, or as soon as its output
    is in place; else let it finish."""
    before, log = inode(out), out.parent.parent / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=ENV, start_new_session=True)
    start, tmp_at, out_at = time.monotonic(), None, None
    while proc.poll() is None:
        now = time.monotonic() - start
        if tmp_at is None and any(f"-{proc.pid}-" in n for n in leftovers(out)):
            tmp_at = now
        if out_at is None and inode(out) not in (None, before):
            out_at = now
        if (kill_after_tmp is not None and tmp_at is not None and now - tmp_at >= kill_after_tmp) or \
                (kill_when_in_place and out_at is not None):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    return Run(proc.wait(), log.read_text(), proc.pid, tmp_at, out_at)


def check_after_kill(out: Path, killed: list[int], check) -> tuple | None:
    """Nothing at ``out`` or a complete output (its fingerprint); beside it only hidden temporaries of killed runs."""
    found = check(out) if out.exists() else None
    for name in os.listdir(out.parent):
        if name == out.name:
            continue
        assert name in leftovers(out) and name.startswith(f".{out.name}.tmp-"), name  # hidden, says temporary
        assert int(name.rsplit("-", 2)[1]) in killed, name
    return found


def kill_and_rerun(cmd: list[str], out: Path, check, rng: random.Random, kills: int, first: Run,
                   in_place_kill: bool) -> list[tuple]:
    """Kill ``cmd`` ``kills`` times inside the writing window that ``first`` measured (and once more as soon as
    the output is in place), check what is left each time; run it again to the end; every state seen."""
    window = first.out_at - first.tmp_at
    moments = sorted(rng.uniform(0.05, 0.95) * window for _ in range(kills))
    seen, killed = [], []
    for moment in [*moments, *(["in place"] if in_place_kill else [])]:
        r = run(cmd, out, kill_when_in_place=True) if moment == "in place" else run(cmd, out, kill_after_tmp=moment)
        print(f"killed at {moment}: rc {r.rc}, temporary at {r.tmp_at}, output at {r.out_at}")
        if r.rc == -signal.SIGKILL:
            killed.append(r.pid)
        assert r.rc in (0, -signal.SIGKILL), r.log[-3000:]
        seen.append(check_after_kill(out, killed, check))
        if seen[-1] is not None and "--overwrite" not in cmd:  # it finished before the kill: start afresh, as a
            shutil.rmtree(out)  # user would (the same command would refuse to replace it)
    left = leftovers(out)
    again = run(cmd, out)
    assert again.rc == 0, again.log[-3000:]
    for name in left:  # the temporaries a later run did not already remove: removed now, and said so
        assert f"{out}: removed {name}, left by an interrupted run" in again.log
    assert leftovers(out) == [] and os.listdir(out.parent) == [out.name]
    return [*seen, check(out)]


def verb_test(cmd_old: list[str], cmd_new: list[str], out: Path, check, seed: int, kills: int = 2,
              in_place_kill: bool = True) -> None:
    rng = random.Random(seed)
    first = run(cmd_old, out)
    assert first.rc == 0 and first.tmp_at is not None and first.out_at is not None, first.log[-3000:]
    old = check(out)
    shutil.rmtree(out)
    seen = kill_and_rerun(cmd_old, out, check, rng, kills, first, in_place_kill=False)
    assert all(s in (None, old) for s in seen), seen  # nothing, or exactly what a full run writes
    assert seen[-1] == old
    # --overwrite with other settings: at every moment the old output or the new one, complete
    seen = kill_and_rerun(cmd_new, out, check, rng, max(1, kills - 1), first, in_place_kill)
    new = seen[-1]
    assert new != old and all(s in (old, new) for s in seen), seen
    if in_place_kill:
        assert seen[-2] == new  # killed while the old output was being removed: the new one is in place


@pytest.fixture(scope="module")
def code_tree(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("code") / "src"
    for pkg in PACKAGES:
        shutil.copytree(STDLIB / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def cli(*args) -> list[str]:
    return [*fairseq_ext_command(), *map(str, args)]


def check_binarized(out: Path) -> tuple:
    from fairseq.data import MMapIndexedDataset

    from fairseq_ext.vocab.tokenizer import load_tokenizer

    stats = json.loads((out / "binarize.json").read_text())
    counts = []
    for split, s in sorted(stats["splits"].items()):
        ds = MMapIndexedDataset(str(out / split))
        assert len(ds) == s["items"] and int(ds.sizes.sum()) == s["tokens"], (split, len(ds), s)
        counts.append((split, s["items"], s["tokens"], s["lines_in"]))
    assert len(load_tokenizer(out)) == stats["vocab_size"]
    assert len((out / "dict.txt").read_text().splitlines()) > 0
    return stats["max_line_tokens"], tuple(counts)


@pytest.mark.slow
def test_binarize_killed_at_any_moment(bpe_dir, code_tree, tmp_path):
    text = tmp_path / "text.txt"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in sorted(code_tree.rglob("*.py")))
    text.write_text(sources[:sources.index("\n", 1_200_000)])  # 1.2 MB: about 2 s of writing
    out = tmp_path / "o" / "bin"
    out.parent.mkdir()
    cmd = cli("binarize", "--tokenizer", bpe_dir, "--train", text, "--valid", code_tree / "json" / "decoder.py",
              "-o", out, "--workers", "1", "--batch-mb", "0.25", "--quiet")
    verb_test(cmd, [*cmd, "--overwrite", "--max-line-tokens", "62"], out, check_binarized, seed=1)


def check_code_dataset(out: Path) -> tuple:
    import datasets

    stats = json.loads((out / "code_dataset.json").read_text())
    dd = datasets.load_from_disk(str(out))
    assert sorted(dd) == sorted(stats["splits"])
    for split, s in stats["splits"].items():
        assert len(dd[split]) == s["files"] and sum(dd[split]["length"]) == s["tokens"], (split, s)
    return stats["seed"], tuple((split, s["files"], s["tokens"]) for split, s in sorted(stats["splits"].items()))


@pytest.mark.slow
def test_code_dataset_killed_at_any_moment(bpe_dir, code_tree, tmp_path):
    out = tmp_path / "o" / "code"
    out.parent.mkdir()
    cmd = cli("code-dataset", code_tree, "-o", out, "--tokenizer", bpe_dir, "--workers", "1", "--batch-mb", "0.25",
              "--valid-ratio", "0.1", "--quiet")
    verb_test(cmd, [*cmd, "--overwrite", "--seed", "1"], out, check_code_dataset, seed=2)


def check_exported(out: Path) -> tuple:
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    weights = load_file(out / "model.safetensors")
    assert len(tok) <= model.config.vocab_size and weights
    total = float(sum(t.double().sum() for t in weights.values()))
    return model.config.model_type, len(weights), round(total, 3)


@pytest.mark.slow
def test_export_hf_killed_at_any_moment(bert_dir, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from fairseq_ext.convert.import_hf import import_hf

    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), max_position_embeddings=64, pad_token_id=0,
                                       hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                       intermediate_size=1536))  # 11M parameters: 43 MB to write
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "fs")
    out = tmp_path / "o" / "exported"
    out.parent.mkdir()
    cmd = cli("export-hf", tmp_path / "fs" / "checkpoint.pt", "-o", out)
    # each run spends 7 s importing torch, transformers and fairseq: one kill fresh, one replacing (the kill after
    # the swap is the same code for every verb, tested above and in test_io_utils)
    verb_test(cmd, [*cmd, "--overwrite", "--family", "roberta"], out, check_exported, seed=3, kills=1,
              in_place_kill=False)
