"""fairseq-train as the tests run it, and its figures read from ``--log-format json``, never scraped from text.

Every run made here logs JSON: each progress line is ``... | TAG | {"loss": "9.8", "num_updates": "3", ...}``
(fairseq's ``JsonProgressBar``: ``train_inner`` every ``--log-interval`` updates, ``train`` at an epoch's end,
``valid`` after each validation, whose figures fairseq names ``valid_loss`` ...: they are read back as ``loss``).
:class:`TrainLog` holds those records by tag; the whole text stays available for what is not a figure (a
warning, a one-line error).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's commands
JSON_LOG = ["--log-format", "json"]


@dataclass
class TrainLog:
    """What one fairseq-train run printed: ``text`` (stdout and stderr) and its JSON progress ``records``."""

    text: str
    returncode: int = 0
    records: list[tuple[str, dict]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, returncode: int = 0) -> TrainLog:
        return cls(text, returncode, parse_json_log(text))

    def of(self, tag: str) -> list[dict]:
        """Every record of ``tag`` (``train_inner``, ``train``, ``valid``, ...), in order."""
        return [stats for t, stats in self.records if t == tag]

    def values(self, tag: str, key: str, kind=float) -> list:
        """``key`` of every ``tag`` record that has it."""
        return [kind(stats[key]) for stats in self.of(tag) if key in stats]

    @property
    def train_losses(self) -> list[float]:
        return self.values("train_inner", "loss")

    @property
    def updates(self) -> list[int]:
        """num_updates of every train_inner record."""
        return self.values("train_inner", "num_updates", int)

    @property
    def last_update(self) -> int | None:
        """The highest num_updates any record of the run reports (an update, an epoch's end, a validation)."""
        counts = [int(stats["num_updates"]) for _tag, stats in self.records if "num_updates" in stats]
        return max(counts, default=None)

    @property
    def valid(self) -> list[dict]:
        return self.of("valid")


# fairseq-train's log lines: "TIME | INFO | TAG | {...}"; fairseq-hydra-train's: "[TIME][TAG][INFO] - {...}"
_RECORD = re.compile(r"^(?:.* \| (?P<tag>[^|]+?) \| |\[[^\]]*\]\[(?P<hydra_tag>[^\]]+)\]\[[A-Z]+\] - )"
                     r"(?P<json>\{.*\})\s*$")


def parse_json_log(text: str) -> list[tuple[str, dict]]:
    """(tag, stats) of every JSON progress line of a fairseq log, from fairseq-train or fairseq-hydra-train
    (other lines are left out).

    >>> parse_json_log('t | INFO | train_inner | {"loss": "9.1"}\\n[t][valid][INFO] - {"valid_loss": "8"}\\nx | {')
    [('train_inner', {'loss': '9.1'}), ('valid', {'loss': '8'})]
    """
    out = []
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match is None:
            continue
        try:
            stats = json.loads(match["json"])
        except ValueError:
            continue
        tag = (match["tag"] or match["hydra_tag"]).strip()
        # end-of-epoch and validation records name their figures TAG_KEY ("valid_loss"): keep KEY
        prefix = f"{tag}_"
        out.append((tag, {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in stats.items()}))
    return out


def fairseq_train(*args, launcher=(), check: bool = True, cwd=REPO, env: dict | None = None,
                  console_script: bool = True, timeout: float = 900) -> TrainLog:
    """Run ``fairseq-train ARGS --log-format json`` (after ``launcher``, e.g. torchrun) and return its log.

    ``console_script``: the virtualenv's ``fairseq-train``; else ``python -m fairseq_cli.train``.
    ``check``: the run must exit 0 (else the end of its log is the failure message).
    """
    program = [str(BIN / "fairseq-train")] if console_script else [sys.executable, "-m", "fairseq_cli.train"]
    cmd = [*map(str, launcher), *program, *map(str, args), *JSON_LOG]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=dict(os.environ) if env is None else env)
    log = TrainLog.parse(proc.stdout + proc.stderr, proc.returncode)
    if check:
        assert proc.returncode == 0, log.text[-4000:]
    return log


def checkpoint_updates(path) -> int:
    """The number of updates a checkpoint was saved after (read through the plugin's safe loader)."""
    from fairseq_ext.serialization import safe_torch_load

    return safe_torch_load(path, map_location="cpu")["optimizer_history"][-1]["num_updates"]
