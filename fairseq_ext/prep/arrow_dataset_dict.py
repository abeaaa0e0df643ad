"""A ``DatasetDict`` directory made around Arrow files streamed into place: what ``save_to_disk`` writes,
without copying the data a second time (``code-dataset`` writes each split's Arrow file batch by batch)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ARROW_SHARD = "data-00000-of-00001.arrow"


def finish_dataset_dict(out: Path, splits: list[str]) -> None:
    """Make ``out`` what ``DatasetDict.save_to_disk`` writes, around the Arrow files already in place.

    Each ``out/SPLIT/data-00000-of-00001.arrow`` was streamed there by :class:`_SplitWriter`;
    this adds ``state.json``, ``dataset_info.json`` and ``dataset_dict.json`` exactly as
    ``save_to_disk`` does, instead of copying the data a second time (which would also map
    every page of it into memory).
    """
    import datasets
    from datasets.utils.py_utils import asdict

    for split in splits:
        ds = datasets.Dataset.from_file(str(out / split / ARROW_SHARD))  # memory-mapped, reads the schema
        state = {"_data_files": [{"filename": ARROW_SHARD}], "_fingerprint": _file_digest(out / split / ARROW_SHARD),
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
                 "_output_all_columns": False, "_split": None}
        (out / split / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(ds.info)  # as save_to_disk: first-level keys sorted, nested feature order kept
        info = {k: info[k] for k in sorted(info)}
        (out / split / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        del ds
    (out / "dataset_dict.json").write_text(json.dumps({"splits": splits}), encoding="utf-8")


def _file_digest(path: Path) -> str:
    """A fingerprint that is the same for the same bytes (save_to_disk's own is random for a new file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]
