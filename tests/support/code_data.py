"""Code datasets built by hand in code-dataset's interface format, from standard-library sources."""

from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

import numpy as np

from fairseq_ext.prep.mmap_writer import MMapWriter, best_dtype
from fairseq_ext.vocab.dict_txt import write_dict_txt
from fairseq_ext.vocab.tokenizer import load_tokenizer, save_tokenizer, special_roles, vocab_in_id_order

STDLIB = Path(sysconfig.get_paths()["stdlib"])


# split by package, as `fairseq-ext code-dataset` does: (project, files)
SPLITS = {
    "train": [("json", sorted((STDLIB / "json").glob("*.py"))), ("textwrap", [STDLIB / "textwrap.py"])],
    "valid": [("html", [STDLIB / "html" / "__init__.py", STDLIB / "html" / "parser.py"])],
}


def make_code_dataset(out: Path, tokenizer, splits=SPLITS, fmt: str = "arrow", num_shards=None) -> dict:
    """A code dataset directory in the interface format of `fairseq-ext code-dataset` (built here, by hand).

    Returns {split: [input_ids of each row]}.
    """
    import datasets

    tok = load_tokenizer(tokenizer)
    features = datasets.Features({
        "path": datasets.Value("string"), "project": datasets.Value("string"),
        "language": datasets.Value("string"), "sha256": datasets.Value("string"),
        "num_bytes": datasets.Value("int64"), "input_ids": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32")})
    symbols, _holes = vocab_in_id_order(tok)
    eos = special_roles(tok).eos
    dicts, ids_by_split, counts = {}, {}, {"files_seen": 0, "kept": {}, "tokens": {}}
    out.mkdir(parents=True, exist_ok=True)
    for split, projects in splits.items():
        rows = {name: [] for name in features}
        for project, files in projects:
            for f in files:
                data = f.read_bytes()
                ids = tok(data.decode("utf-8"), add_special_tokens=False, verbose=False)["input_ids"]
                for name, value in (("path", f"{STDLIB.name}/{f.relative_to(STDLIB)}"), ("project", project),
                                    ("language", "python"), ("sha256", hashlib.sha256(data).hexdigest()),
                                    ("num_bytes", len(data)), ("input_ids", ids), ("length", len(ids))):
                    rows[name].append(value)
        dicts[split] = datasets.Dataset.from_dict(rows, features=features)
        ids_by_split[split] = rows["input_ids"]
        counts["files_seen"] += len(rows["path"])
        counts["kept"][split] = len(rows["path"])
        counts["tokens"][split] = int(sum(rows["length"]))
        if fmt in ("mmap", "both"):
            writer = MMapWriter(out / split, best_dtype(len(symbols)))
            writer.add(np.concatenate([np.append(i, eos) for i in rows["input_ids"]]),
                       np.array([len(i) + 1 for i in rows["input_ids"]]))
            writer.close()
    if fmt in ("arrow", "both"):
        datasets.DatasetDict(dicts).save_to_disk(str(out), num_shards=num_shards)
    save_tokenizer(tok, out)
    write_dict_txt(symbols, out / "dict.txt")
    (out / "code_dataset.json").write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    return ids_by_split
