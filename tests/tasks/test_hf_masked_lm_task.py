"""hf_masked_lm: registry keys, packed and line-by-line samples, worker-count independence, training."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, binarized_documents, make_text, run_cli
from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMConfig, HFMaskedLMTask
from support.training import JSON_LOG, TrainLog, fairseq_train


def test_mask_settings_map_onto_mask_config_and_default_to_berts():
    from fairseq_ext.data.masking import MaskConfig
    from fairseq_ext.tasks.base import data_config
    from fairseq_ext.tasks.hf_masked_lm import MASK_SETTINGS

    assert data_config(MaskConfig, HFMaskedLMConfig(), MASK_SETTINGS) == MaskConfig()
    cfg = HFMaskedLMConfig(mask_prob=0.2, leave_unmasked_prob=0.05, random_token_prob=0.15, mask_unit="span",
                           span_lambda=2.5)
    assert data_config(MaskConfig, cfg, MASK_SETTINGS) == MaskConfig(0.2, 0.05, 0.15, "span", 2.5)


@pytest.fixture(scope="module")
def data(tmp_path_factory, bert_dir):
    return binarized_documents(tmp_path_factory.mktemp("mlm"), bert_dir, 300, seed=8)


def make_task(data, **kw):
    cfg = HFMaskedLMConfig(data=str(data), tokens_per_sample=64, seed=5, dataset_impl=None, **kw)
    task = HFMaskedLMTask.setup_task(cfg)
    task.load_dataset("train")
    return task


@pytest.mark.parametrize("mode", ["none", "complete_doc", "eos"])
def test_samples_start_with_cls_and_keep_the_bert_vocabulary(data, mode):
    task = make_task(data, sample_break_mode=mode)
    d = task.source_dictionary
    assert (d.bos(), d.eos(), d.pad(), d.mask_index) == (101, 102, 0, 103)  # BERT's own ids
    ds = task.datasets["train"]
    for i in range(len(ds)):
        s = ds[i]
        assert s["source"][0] == 101 and len(s["source"]) <= 64
        if mode == "eos" and len(s["target"]) > 1:  # line by line: one sentence, ending with [SEP]
            assert int((ds.blocks[i] == 102).sum()) == 1
    batch = ds.collater([ds[0], ds[1]])
    assert batch["net_input"]["src_tokens"].shape[0] == 2 and batch["target"].shape == \
        batch["net_input"]["src_tokens"].shape


@pytest.mark.parametrize("mode", ["none", "complete", "complete_doc", "eos"])
def test_blocks_hold_the_whole_stream_in_order(data, mode):
    """Without the bos, the blocks one after another are every token of the split, none lost (documents
    are separated by empty items, which must not cost a token), and only 'none' cuts sentences."""
    from fairseq.data import MMapIndexedDataset

    items = MMapIndexedDataset(str(data / "train"))
    stream = [t for i in range(len(items)) for t in items[i].tolist()]
    ds = make_task(data, sample_break_mode=mode).datasets["train"]
    blocks = [ds.blocks[i].tolist() for i in range(len(ds))]
    assert all(b[0] == 101 and len(b) <= 64 for b in blocks)
    assert [t for b in blocks for t in b[1:]] == stream
    if mode == "none":
        assert [len(b) for b in blocks[:-1]] == [64] * (len(blocks) - 1)
    else:
        assert all(b[-1] == 102 for b in blocks)


def test_samples_do_not_depend_on_worker_count(data):
    ds = make_task(data, mask_unit="word", short_seq_prob=0.1).datasets["train"]
    direct = [(ds[i]["source"].tolist(), ds[i]["target"].tolist()) for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, sampler=range(len(ds)))
    assert [(s["source"].tolist(), s["target"].tolist()) for s in loader] == direct
    ds.set_epoch(2)  # dynamic masking: new masks every epoch
    assert [ds[i]["target"].tolist() for i in range(len(ds))] != [t for _s, t in direct]


def test_every_sample_is_batched(data):
    """fairseq 0.12 drops a last batch that is not a multiple of 8 (fairseq#5036); ours keeps it."""
    task = make_task(data)
    ds = task.datasets["train"]
    batches = ds.batch_by_size(np.arange(13), max_tokens=4096, required_batch_size_multiple=8)
    assert [len(b) for b in batches] == [8, 5]
    itr = task.get_batch_iterator(ds, max_tokens=1024, max_positions=64, required_batch_size_multiple=8)
    seen = sorted(int(i) for b in itr.frozen_batches for i in b)
    assert seen == list(range(len(ds))) and len(ds) % 8 != 0
    assert all(len(b) % 8 == 0 for b in itr.frozen_batches[:-1] if len(b) >= 8)


def test_masked_share(data):
    ds = make_task(data).datasets["train"]
    chosen = sum(int((ds[i]["target"] != 0).sum()) for i in range(len(ds)))
    ordinary = sum(int((~ds.special[ds.blocks[i].numpy()]).sum()) for i in range(len(ds)))
    assert chosen / ordinary == pytest.approx(0.15, abs=0.02)
    assert np.isin(ds.random_pool, ds.dictionary.special_ids).sum() == 0


@pytest.mark.slow
def test_roberta_trains_with_accuracy(data, tmp_path):
    run = fairseq_train(data, "--user-dir", "fairseq_ext", "--task", "hf_masked_lm", "--arch", "roberta_small",
                        "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                        "--encoder-attention-heads", "2", "--tokens-per-sample", "64",
                        "--criterion", "masked_lm_with_accuracy",
                        "--mask-unit", "word", "--short-seq-prob", "0.1", "--sample-break-mode", "complete",
                        "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024", "--max-update", "30", "--cpu",
                        "--num-workers", "0", "--log-interval", "10", "--save-dir", tmp_path / "ckpt",
                        "--no-epoch-checkpoints", "--seed", "1", console_script=False)
    losses = run.train_losses
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert run.valid and "accuracy" in run.valid[-1]

    # export: RoBERTa by default (where it came from), BERT on request; both give fairseq's MLM logits
    from fairseq import checkpoint_utils
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    checkpoint = tmp_path / "ckpt" / "checkpoint_last.pt"
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    for family, flags in (("RobertaForMaskedLM", []), ("BertForMaskedLM", ["--family", "bert"])):
        out = tmp_path / family
        proc = run_cli("export-hf", str(checkpoint), "-o", str(out), *flags)
        assert "parity: max |logit difference|" in proc.stdout
        model = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
        assert type(model).__name__ == family
        tok = AutoTokenizer.from_pretrained(str(out))
        batch = tok(["The quick brown fox jumps over the lazy dog.", "Students read books."], padding=True,
                    return_tensors="pt")
        with torch.no_grad():
            fs_logits = models[0].eval()(batch["input_ids"])[0][..., : len(tok)]
            hf_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        keep = batch["attention_mask"].bool()
        assert float((fs_logits - hf_logits).abs()[keep].max()) <= 1e-4


@pytest.mark.slow
def test_pretrain_roberta_script_runs_the_whole_recipe(tmp_path):
    """scripts/pretrain_roberta.sh as a user runs it (CPU, tiny sizes through its variables)."""
    from transformers import AutoModelForMaskedLM

    (tmp_path / "corpus").mkdir()
    lines = make_text(500, seed=30)
    text = "\n".join(ln + ("\n" if i % 5 == 4 else "") for i, ln in enumerate(lines)) + "\n"
    (tmp_path / "corpus" / "text.txt").write_text(text, encoding="utf-8")
    tiny = ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
            "--encoder-attention-heads", "2", "--cpu", "--num-workers", "0", "--log-interval", "1", *JSON_LOG]
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
               RAW=str(tmp_path / "corpus"), WORK=str(tmp_path / "run"), VOCAB="400",
               TOKENS_PER_SAMPLE="64", MASK_UNIT="word", MAX_TOKENS="1024", UPDATE_FREQ="1", MAX_UPDATE="6",
               WARMUP="1", PRECISION="", EXTRA_TRAIN_ARGS=" ".join(tiny))
    proc = subprocess.run(["bash", "scripts/pretrain_roberta.sh"], capture_output=True, text=True, cwd=REPO,
                          env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    run = TrainLog.parse(log)
    assert run.updates[-1] == 6 and any("accuracy" in r for r in run.of("train") + run.valid)
    assert "exported roberta" in log and "parity: max |logit difference|" in log
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "run" / "hf-model"))
    assert type(model).__name__ == "RobertaForMaskedLM" and model.config.vocab_size == 400
