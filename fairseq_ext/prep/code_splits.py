"""Train/valid/test by project: the unit of a split, and a seeded assignment of units to splits.

A unit (``project`` column) is the SRC directory's name plus the first
``depth`` directories under it: with depth 1, ``Lib/json/decoder.py`` and
``Lib/json/tests/x.py`` are both in unit ``Lib/json``. A file with fewer
directories above it than ``depth`` belongs to the deepest directory it has,
and a file directly in SRC is a unit of its own (a top-level module is a
project of one file). With ``by="file"`` every file is its own unit. A table's row with a project
(``--project-key``) is in that project's unit, whatever its path.

Units are ordered by ``sha256(f"{seed}:{unit}")`` (so the order depends on
the seed and the names only, never on the walk), then valid takes units from
the front until it holds ``valid_ratio`` of the files, test the next ones up
to ``test_ratio``, and train the rest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from fairseq_ext.errors import UserError
from fairseq_ext.prep.code_files import SourceFile

SPLITS = ("train", "valid", "test")


def unit_of(f: SourceFile, by: str = "directory", depth: int = 1) -> str:
    """The split unit of a file.

    >>> from pathlib import Path
    >>> f = SourceFile(Path("x"), "Lib/json/tests/x.py", ("json", "tests"), 1, "python")
    >>> unit_of(f), unit_of(f, depth=2), unit_of(f, by="file")
    ('Lib/json', 'Lib/json/tests', 'Lib/json/tests/x.py')
    >>> unit_of(SourceFile(Path("x"), "Lib/abc.py", (), 1, "python"))
    'Lib/abc.py'
    """
    if by == "file":
        return f.rel
    if f.project is not None:
        return f.project
    if not f.depth_parts:
        return f.rel
    src = f.rel.split("/", 1)[0]
    return "/".join((src, *f.depth_parts[:depth]))


def shard_of(size: int, num_shards: int) -> int:
    """The shard (of ``num_shards``) a file of ``size`` bytes is dealt to: a stable hash of its size.

    Exact duplicates have the same size, so they always meet in one shard, where deduplication keeps the
    same copy an unsharded run keeps; and no shard needs another shard's bytes to know what is its own.

    >>> shard_of(1234, 1), shard_of(1234, 3) == shard_of(1234, 3), sorted({shard_of(n, 3) for n in range(30)})
    (0, True, [0, 1, 2])
    """
    digest = hashlib.sha256(f"size:{size}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def assign_units(files_per_unit: Counter, valid_ratio: float, test_ratio: float, seed: int) -> dict[str, str]:
    """unit -> split; valid/test get at least one unit each when their ratio is > 0, train always some."""
    if valid_ratio < 0 or test_ratio < 0 or valid_ratio + test_ratio >= 1:
        raise UserError(f"--valid-ratio + --test-ratio must be < 1, got {valid_ratio} + {test_ratio}")
    wanted = [s for s, r in (("valid", valid_ratio), ("test", test_ratio)) if r > 0]
    if len(files_per_unit) < len(wanted) + 1:
        raise UserError(f"only {len(files_per_unit)} unit(s) (projects) to split into train and {' and '.join(wanted)}"
                        ": give more directories, a larger --split-depth, --split-by file, or ratio 0")
    order = sorted(files_per_unit, key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).digest())
    total = sum(files_per_unit.values())
    out: dict[str, str] = {}
    for k, split in enumerate(wanted):
        budget = (valid_ratio if split == "valid" else test_ratio) * total
        free = [u for u in order if u not in out]
        spare = len(free) - (len(wanted) - k)  # the later splits and train keep a unit each
        taken = 0
        for u in free:
            if spare > 0 and taken + files_per_unit[u] <= budget:
                out[u] = split
                taken += files_per_unit[u]
                spare -= 1
        if taken == 0:  # every unit is larger than the budget: the smallest one, first in hash order on ties
            out[min(free, key=lambda u: files_per_unit[u])] = split
    for u in order:
        out.setdefault(u, "train")
    return out


def split_files(files: Sequence[SourceFile], by: str, depth: int, valid_ratio: float, test_ratio: float,
                seed: int) -> dict[str, list[tuple[SourceFile, str]]]:
    """{split: [(file, unit)] sorted by path}: the order pass 2 reads them in, whatever the walk order."""
    units = [unit_of(f, by, depth) for f in files]
    assignment = assign_units(Counter(units), valid_ratio, test_ratio, seed)
    out: dict[str, list[tuple[SourceFile, str]]] = {s: [] for s in SPLITS}
    for f, u in zip(files, units):
        out[assignment[u]].append((f, u))
    for rows in out.values():
        rows.sort(key=lambda fu: fu[0].rel)
    wanted = {"train": True, "valid": valid_ratio > 0, "test": test_ratio > 0}
    return {s: rows for s, rows in out.items() if wanted[s]}
