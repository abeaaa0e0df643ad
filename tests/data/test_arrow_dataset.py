"""ArrowTokenDataset over a code dataset directory: ids, sizes, memory mapping, pickling, errors; FileSamples."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from fairseq_ext.data.arrow_dataset import ArrowTokenDataset, CodeDataError, FileSamples
from support.code_data import SPLITS, make_code_dataset


@pytest.fixture(scope="module")
def code_data(tmp_path_factory, bpe_dir):
    out = tmp_path_factory.mktemp("code") / "data"
    ids = make_code_dataset(out, bpe_dir, num_shards={"train": 2, "valid": 1})  # train: two Arrow files
    return out, ids


def test_items_are_the_rows_ids_then_eos(code_data):
    out, ids = code_data
    for split in ("train", "valid"):
        ds = ArrowTokenDataset(out, split, eos=2)
        assert len(ds) == len(ids[split]) and ds.sizes.tolist() == [len(i) + 1 for i in ids[split]]
        for i, expected in enumerate(ids[split]):
            item = ds[i]
            assert item.dtype == torch.long and item.tolist() == expected + [2]
    assert ArrowTokenDataset(out, "train", eos=2).supports_prefetch is False


def test_train_split_spans_two_arrow_files(code_data):
    """Rows on both sides of the chunk boundary come out right (num_shards=2 above)."""
    ds = ArrowTokenDataset(code_data[0], "train", eos=2)
    assert len(ds._offsets) == 2 and ds._chunk_start[1] not in (0, len(ds))


def _mapped_file(address: int) -> str:
    """The file mapped at ``address`` in this process ('' for anonymous memory)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) == 6 else ""
    return ""


def test_memory_mapped_not_copied(code_data):
    out, ids = code_data
    corpus_bytes = 4 * sum(len(i) for i in ids["train"])
    before = pa.total_allocated_bytes()
    ds = ArrowTokenDataset(out, "train", eos=2)
    for i in range(len(ds)):
        ds[i]
    assert pa.total_allocated_bytes() - before < corpus_bytes / 20
    for values in ds._values:  # the token buffer is the Arrow file itself, mapped
        assert _mapped_file(values.ctypes.data).endswith(".arrow")
        assert not values.flags.writeable


def test_pickled_and_in_worker_processes(code_data):
    ds = ArrowTokenDataset(code_data[0], "train", eos=2)
    state = pickle.dumps(ds)
    assert len(state) < 1000  # the directory and split, not the data
    again = pickle.loads(state)
    assert all(torch.equal(again[i], ds[i]) for i in range(len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, sampler=range(len(ds)),
                                         multiprocessing_context="spawn")
    assert [t.tolist() for t in loader] == [ds[i].tolist() for i in range(len(ds))]


def test_errors_name_the_directory(code_data, tmp_path):
    out, _ids = code_data
    with pytest.raises(CodeDataError, match=rf"^{out}: no 'test' split \(it has: train, valid\)$"):
        ArrowTokenDataset(out, "test", eos=2)
    with pytest.raises(CodeDataError, match=rf"^{tmp_path}: no dataset_dict.json"):
        ArrowTokenDataset(tmp_path, "train", eos=2)


def test_length_column_is_checked(tmp_path, bpe_dir):
    import datasets

    make_code_dataset(tmp_path / "d", bpe_dir, splits={"train": SPLITS["valid"]})
    bad = datasets.load_from_disk(str(tmp_path / "d"))["train"]
    bad = bad.map(lambda row, i: {"length": row["length"] + (i == 1)}, with_indices=True)
    datasets.DatasetDict({"train": bad}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(CodeDataError, match=r"/bad/train: row 1: 'length' disagrees with len\(input_ids\)"):
        ArrowTokenDataset(tmp_path / "bad", "train", eos=2)


class _Items(torch.utils.data.Dataset):
    def __init__(self, sizes):
        self.sizes = np.array(sizes)
        self.items = [torch.arange(n) + 100 * i for i, n in enumerate(sizes)]

    def __getitem__(self, i):
        return self.items[i]


def test_file_samples_cut_or_split():
    items = _Items([3, 10, 4, 9])
    cut = FileSamples(items, items.sizes, 4, split_long=False)
    assert [cut[i].tolist() for i in range(len(cut))] == [[0, 1, 2], [100, 101, 102, 103], [200, 201, 202, 203],
                                                          [300, 301, 302, 303]]
    assert (cut.files_cut, cut.tokens_dropped) == (2, 6 + 5)
    split = FileSamples(items, items.sizes, 4, split_long=True)
    assert split.sizes.tolist() == [3, 4, 4, 2, 4, 4, 4, 1] and split.tokens_dropped == 0
    assert torch.cat([split[i] for i in range(len(split))]).tolist() == torch.cat(items.items).tolist()
