"""The continued-pretraining recipe end to end, as a user runs it: scripts/continue_pretraining.sh on a
tiny BERT made from a config and tweet-like text made here (import -> prepare tweets -> binarize with the
model's tokenizer -> train -> export), then its Slurm batch file resuming the run, its hydra config, and
--restore-file from the import.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch

from conftest import BIN, REPO, shell
from support.training import JSON_LOG, TrainLog
from support.tweets import bert_vocab, make_tweets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    root = tmp_path_factory.mktemp("continued")
    hf = root / "tiny-bert"
    hf.mkdir()
    (hf / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(hf / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    (root / "raw").mkdir()
    (root / "raw" / "tweets.txt").write_text("\n".join(make_tweets(800, seed=4)) + "\n", encoding="utf-8")
    env = dict(HF_MODEL=str(hf), RAW=str(root / "raw"), WORK=str(root / "run"), TOKENS_PER_SAMPLE="32",
               VALID_RATIO="0.05", MASK_UNIT="word", BATCH_SIZE="16", MAX_UPDATE="100", LR="2e-3", WARMUP="5",
               SAVE_INTERVAL="50", PRECISION="",
               EXTRA_TRAIN_ARGS="--cpu --num-workers 0 --log-interval 5 --seed 3 --log-format json")
    log = shell(["bash", "scripts/continue_pretraining.sh"], env)
    return root, hf, env, log


def test_recipe_imports_prepares_and_trains(recipe):
    root, _hf, _env, log = recipe
    assert "imported bert as fairseq hf_bert" in log
    text = (root / "run" / "text" / "train.txt").read_text(encoding="utf-8")
    assert "twitteruser" in text and "twitterurl" in text and "face with tears of joy" in text
    assert "@" not in text and "&amp;" not in text and "http" not in text
    assert text == text.lower()  # the tiny BERT is uncased, so prepare lower-cased
    run = TrainLog.parse(log)
    losses = run.train_losses
    assert len(losses) >= 8, log[-3000:]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses  # bits
    assert run.valid and all("accuracy" in r for r in run.valid)


def test_exported_model_loads_and_matches_fairseq(recipe):
    from fairseq import checkpoint_utils
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

    import fairseq_ext  # noqa: F401  (as a user would: registers hf_bert and loads checkpoints under torch>=2.6)

    root, hf, _env, log = recipe
    out = root / "run" / "hf-model"
    assert re.search(r"parity: max \|logit difference\| fairseq vs transformers = \S+ \(tolerance 0.0001\)", log)
    model = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    assert isinstance(model, BertForMaskedLM)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(str(hf)).get_vocab()
    batch = tok(["twitteruser stay home and wear a mask face with tears of joy", "thank you nurses!"],
                padding=True, return_tensors="pt")
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task(
        [str(root / "run" / "checkpoints" / "checkpoint_best.pt")])
    with torch.no_grad():
        fs_logits = models[0].eval()(batch["input_ids"])[0][..., : len(tok)]
        hf_logits = model(**batch).logits
    keep = batch["attention_mask"].bool()
    assert float((fs_logits - hf_logits).abs()[keep].max()) <= 1e-4
    original = BertForMaskedLM.from_pretrained(str(hf)).state_dict()
    trained = model.state_dict()
    assert trained.keys() == original.keys()
    assert not torch.equal(trained["bert.encoder.layer.0.attention.self.query.weight"],
                           original["bert.encoder.layer.0.attention.self.query.weight"])
    assert model.config.layer_norm_eps == 1e-12 and model.config.type_vocab_size == 2
    assert "hf_masked_lm" in (out / "README.md").read_text()


def test_slurm_batch_file_resumes_the_run(recipe, tmp_path):
    root, _hf, env, _log = recipe
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (shim / "srun").chmod(0o755)
    slurm = dict(env, MAX_UPDATE="110", BATCH_SIZE="16", UPDATE_FREQ="1", PRECISION="--cpu", SLURM_JOB_ID="7",
                 SLURM_SUBMIT_DIR=str(REPO), VENV=str(BIN.parent), PATH_PREFIX=str(shim))
    log = shell(["bash", "scripts/slurm/continue_pretraining.sbatch"], slurm)
    assert "checkpoint_last.pt" in log and TrainLog.parse(log).last_update == 110, log[-3000:]
    assert "imported" not in log  # import, prepare and binarize were done by the first run
    assert (root / "run" / "hf-model" / "model.safetensors").exists()


def test_hydra_config_and_restore_file_continue_from_the_import(recipe, tmp_path):
    root, _hf, _env, _log = recipe
    start, data = root / "run" / "start", root / "run" / "data-bin"
    hydra = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]
    log = shell([*hydra, "--config-dir", str(REPO / "scripts" / "hydra"), "--config-name", "continue_pretraining",
                 f"task.data={data}", f"common.user_dir={REPO / 'fairseq_ext'}", f"checkpoint.save_dir={tmp_path}",
                 f"checkpoint.finetune_from_model={start / 'checkpoint.pt'}", "task.tokens_per_sample=32",
                 "optimization.max_update=2", "dataset.batch_size=8", "common.cpu=true", "common.log_interval=1",
                 "common.log_format=json",
                 "dataset.num_workers=0", f"hydra.run.dir={tmp_path / 'hydra'}",
                 *(start / "hydra_overrides.txt").read_text().split()], {}, cwd=tmp_path)
    run = TrainLog.parse(log)
    assert "loaded checkpoint" in log.lower() and run.updates[-1] == 2
    assert all("accuracy" in r for r in run.of("train_inner"))
    log = shell([str(BIN / "fairseq-ext"), "export-hf", str(tmp_path / "checkpoint_last.pt"), "-o",
                 str(tmp_path / "hf-from-hydra")], {})  # hydra stores the model settings as a plain dict
    assert "parity: max |logit difference|" in log and "exported bert" in log
    log = shell([sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", "fairseq_ext",
                 "--task", "hf_masked_lm", "--criterion", "masked_lm_with_accuracy",
                 *(start / "model_args.txt").read_text().split(), "--tokens-per-sample", "32",
                 "--restore-file", str(start / "checkpoint.pt"), "--reset-optimizer", "--reset-dataloader",
                 "--reset-meters", "--optimizer", "adam", "--lr", "1e-4", "--batch-size", "8", "--max-update", "2",
                 "--cpu", "--num-workers", "0", *JSON_LOG, "--log-interval", "1",
                 "--save-dir", str(tmp_path / "restore")], {})
    assert "Loaded checkpoint" in log and TrainLog.parse(log).updates[-1] == 2
