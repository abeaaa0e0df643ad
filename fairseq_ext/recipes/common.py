"""What every recipe does alike: numbered steps, fairseq-train run as a user runs it, paths fixed after the rename."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def relocate_paths(out: Path, tmp: Path, names: list[str]) -> None:
    """The run happened in ``tmp``, renamed to ``out`` at the end: the text files that name their own
    directory (model card, counts) get ``out``'s path, so they do not point at a directory that is gone."""
    for name in names:
        path = out / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if str(tmp) in text:
                partial = path.with_name(path.name + ".tmp")
                partial.write_text(text.replace(str(tmp), str(out)), encoding="utf-8")
                partial.replace(path)


def export_checkpoint(work: Path):
    """``export-hf`` of ``work/checkpoints/checkpoint_last.pt`` to ``work/hf-model`` (parity checked), in this
    process: fairseq is imported and the plugin registered only now, after the steps that do not need it."""
    import fairseq_ext

    fairseq_ext.register()
    from transformers.utils import logging as hf_logging

    from fairseq_ext.convert.export import export_hf

    hf_logging.disable_progress_bar()
    return export_hf(work / "checkpoints" / "checkpoint_last.pt", work / "hf-model")


def finish(out: Path, train_command: list[str], started: float, listing: list[tuple[str, str]]) -> None:
    """``out/train.sh`` (the fairseq-train command, which resumes when rerun), and what the run left where."""
    command = " ".join(shlex.quote(a) for a in ["fairseq-train", *train_command])
    (out / "train.sh").write_text("#!/usr/bin/env bash\n# rerun (e.g. with a higher --max-update) to resume\n"
                                  + command + ' "$@"\n', encoding="utf-8")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; everything is in {out}/:")
    for name, what in listing:
        print(f"  {out / name}  {what}")


def step(n: int, text: str, total: int = 7) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def train(work: Path, args: list[str], log_name: str = "train.log") -> tuple[float, float]:
    """Run ``fairseq-train ARGS`` as a user would; echo its progress (the log in ``work/log_name``); return
    the last validation loss and accuracy (nan when the criterion logs none)."""
    from fairseq_ext.errors import UserError

    cmd = [sys.executable, "-m", "fairseq_cli.train", *args]
    last_valid, last_acc, last_line = None, float("nan"), ""
    with open(work / log_name, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ))
        for line in proc.stdout:
            log.write(line)
            last_line = line.strip() or last_line
            if "| train_inner |" in line or "| valid |" in line:
                print("      " + line.split(" | ", 3)[-1].strip(), flush=True)
            if "| valid |" in line and "| loss " in line:
                last_valid = float(line.split("| loss ")[1].split()[0])
                if "| accuracy " in line:
                    last_acc = float(line.split("| accuracy ")[1].split()[0])
        code = proc.wait()
    if code != 0 or last_valid is None:
        raise UserError(f"fairseq-train failed (exit {code}): {last_line}")
    return last_valid, last_acc
