"""The code recipe end to end, as a user runs it: scripts/pretrain_code.sh on real standard-library
packages (train-tokenizer -> code-dataset -> code_mlm on a t5_encoder -> export-hf -> code-pairs ->
code_contrastive from the code_mlm checkpoint), then its Slurm batch file resuming both stages, its hydra
configs, and an HF T5 imported and pretrained further on code.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import BIN, REPO, shell
from support.training import JSON_LOG, TrainLog

pytestmark = pytest.mark.slow


STDLIB = Path(sysconfig.get_paths()["stdlib"])
PACKAGES = ("json", "email", "html", "http", "urllib", "xmlrpc", "wsgiref", "logging", "concurrent")
TINY_T5 = ("--encoder-layers 2 --encoder-embed-dim 64 --kv-dim 16 --encoder-ffn-embed-dim 128 "
           "--encoder-attention-heads 4 --feed-forward-proj gated-gelu --cpu --num-workers 0 --log-interval 10 "
           "--validate-interval-updates 40 --save-interval-updates 40 --seed 1 --log-format json")
SNIPPETS = ["def load(fp, *, cls=None):\n    return loads(fp.read(), cls=cls)\n",
            "import json\n\nclass Encoder(json.JSONEncoder):\n    def default(self, o):\n        return str(o)\n"]


def losses(log: str) -> list[float]:
    return TrainLog.parse(log).train_losses


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("code-recipe")
    for pkg in PACKAGES:  # one project per package, as in a checkout of several repositories
        shutil.copytree(STDLIB / pkg, root / "Lib" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(SRC=str(root / "Lib"), WORK=str(root / "run"), LANGUAGES="python", VALID_RATIO="0.15", VOCAB="1000",
               TOKENS_PER_SAMPLE="64", MAX_TOKENS="2048", UPDATE_FREQ="1", MAX_UPDATE="80", LR="3e-3", WARMUP="10",
               PRECISION="", EXTRA_TRAIN_ARGS=TINY_T5, PAIR_KIND="docstring", CONTRASTIVE_UPDATES="25",
               CONTRASTIVE_LR="1e-3", CONTRASTIVE_WARMUP="5", CONTRASTIVE_MAX_TOKENS="4096", QUERY_TOKENS="64",
               KEY_TOKENS="128", GRAD_CACHE_CHUNK="16")
    log = shell(["bash", "scripts/pretrain_code.sh"], env)
    return root, env, log


def test_recipe_learns_and_exports_a_t5_encoder_that_matches_fairseq(recipe):
    from fairseq import checkpoint_utils
    from transformers import AutoTokenizer, T5EncoderModel

    root, _env, log = recipe
    run = root / "run"
    stats = json.loads((run / "code-data" / "code_dataset.json").read_text())
    assert "T5EncoderFairseqModel" in log and "(train, Arrow)" in log
    train = losses(log)
    assert len(train) >= 6 and train[-1] < train[0] - 0.7, train  # it learns (measured: 10.45 -> 9.46 bits)
    assert any("accuracy" in r for r in TrainLog.parse(log).valid)
    assert "exported t5" in log and "hidden-state difference" in log
    out = run / "hf-model"
    model = T5EncoderModel.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    enc = tok(SNIPPETS, padding=True, return_tensors="pt")
    assert enc["attention_mask"].eq(0).any()
    best = run / "checkpoints" / "checkpoint_best.pt"
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(best)])
    with torch.no_grad():
        fs = models[0].eval()(enc["input_ids"], features_only=True)[0]
        hf = model(**enc).last_hidden_state
    keep = enc["attention_mask"].bool()
    assert float((fs - hf).abs()[keep].max()) <= 1e-4
    assert task.dictionary.tokenizer_size == len(tok)
    kept = sum(stats["kept"].values()) if isinstance(stats["kept"], dict) else stats["kept"]
    assert kept > 50
    card = (out / "README.md").read_text()
    assert "code_mlm" in card and "T5EncoderModel" in card


def test_recipe_continues_with_the_contrastive_stage_from_the_code_mlm_checkpoint(recipe):
    from fairseq_ext.criterions.ranking import chance_metrics
    from fairseq_ext.serialization import safe_torch_load

    root, _env, log = recipe
    run = root / "run"
    pairs = json.loads((run / "code-pairs" / "code_pairs.json").read_text())
    data = json.loads((run / "code-data" / "code_dataset.json").read_text())
    # the same split: every project held out by code-dataset is held out by code-pairs
    assert pairs["splits"]["valid"]["projects"] == data["splits"]["valid"]["projects"] >= 1
    stage = log[log.index("code_contrastive"):]
    assert f"loading pretrained model from {run / 'checkpoints' / 'checkpoint_best.pt'}" in stage
    valid = TrainLog.parse(stage).values("valid", "mrr")
    assert valid, stage[-3000:]
    pool = pairs["splits"]["valid"]["pairs"]
    assert valid[-1] > 1.5 * chance_metrics(pool)["mrr"]  # held-out MRR beats chance (measured: see NOTES)
    with open(run / "contrastive" / "checkpoint_best.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert TrainLog.parse(stage).last_update == 25  # the stage ran to the end; the best is the best MRR's
    assert state["task_state"]["retrieval"]["mrr"] == pytest.approx(max(valid), abs=1e-3)
    # then the script exports the best checkpoint for sentence-transformers and measures it beside BM25
    modules = json.loads((run / "st-model" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules][:2] == ["Transformer", "Pooling"]
    measured = json.loads((run / "eval-retrieval.json").read_text())
    assert measured["pool"]["pairs"] == pool and "renamed" in measured
    assert measured["pool"]["scores"]["model"]["mrr"] == pytest.approx(state["task_state"]["retrieval"]["mrr"],
                                                                       abs=1e-4)  # the same measurement
    assert measured["pool"]["scores"]["BM25"]["mrr"] > chance_metrics(pool)["mrr"]


def test_slurm_batch_file_resumes_the_run(recipe, tmp_path):
    root, env, _log = recipe
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (shim / "srun").chmod(0o755)
    slurm = dict(DATA=str(root / "run" / "code-data"), WORK=str(root / "run"), MAX_UPDATE="100", MAX_TOKENS="2048",
                 TOKENS_PER_SAMPLE="64", PRECISION="", EXTRA_TRAIN_ARGS=TINY_T5, SLURM_JOB_ID="7",
                 SLURM_SUBMIT_DIR=str(REPO), VENV=str(BIN.parent), PATH_PREFIX=str(shim))
    log = shell(["bash", "scripts/slurm/pretrain_code.sbatch"], slurm)
    assert "loaded checkpoint" in log.lower() and "checkpoint_last.pt" in log
    assert TrainLog.parse(log).last_update == 100, log[-3000:]
    assert min(losses(log)) < max(losses(recipe[2]))
    # the contrastive stage's job resumes the script's contrastive run (25 updates) to 30
    slurm.update(STAGE="contrastive", DATA=str(root / "run" / "code-pairs"), MAX_UPDATE="30", MAX_TOKENS="4096",
                 QUERY_TOKENS="64", KEY_TOKENS="128")
    log = shell(["bash", "scripts/slurm/pretrain_code.sbatch"], slurm)
    assert "loaded checkpoint" in log.lower() and str(root / "run" / "contrastive" / "checkpoint_last.pt") in log
    assert any("mrr" in r and r["num_updates"] == "30" for r in TrainLog.parse(log).valid), log[-3000:]


def test_hydra_config_trains(recipe, tmp_path):
    root, _env, _log = recipe
    hydra = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]
    tiny = ["+model.encoder_layers=1", "+model.encoder_embed_dim=32", "+model.kv_dim=8",
            "+model.encoder_ffn_embed_dim=64", "+model.encoder_attention_heads=4", "task.tokens_per_sample=64",
            "dataset.max_tokens=1024", "optimization.max_update=3", "common.cpu=true", "common.log_interval=1",
            "common.log_format=json", "dataset.num_workers=0"]
    log = shell([*hydra, "--config-dir", str(REPO / "scripts" / "hydra"), "--config-name", "pretrain_code",
                 f"task.data={root / 'run' / 'code-data'}", f"common.user_dir={REPO / 'fairseq_ext'}",
                 f"checkpoint.save_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}", *tiny], {},
                cwd=tmp_path)
    assert TrainLog.parse(log).updates[-1] == 3 and "'mask_unit': identifier" in log
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()


def test_contrastive_hydra_config_trains_from_the_code_mlm_checkpoint(recipe, tmp_path):
    root, _env, _log = recipe
    hydra = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]
    model = re.findall(r"--([\w-]+) (\S+)", TINY_T5.split("--cpu")[0])  # the code MLM run's shapes
    shapes = [f"+model.{k.replace('-', '_')}={v}" for k, v in model]
    log = shell([*hydra, "--config-dir", str(REPO / "scripts" / "hydra"), "--config-name",
                 "pretrain_code_contrastive",
                 f"task.data={root / 'run' / 'code-pairs'}", f"common.user_dir={REPO / 'fairseq_ext'}",
                 f"checkpoint.save_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                 f"checkpoint.finetune_from_model={root / 'run' / 'checkpoints' / 'checkpoint_best.pt'}",
                 *shapes,
                 "task.max_query_tokens=64", "task.max_key_tokens=128", "dataset.max_tokens=2048",
                 "optimization.max_update=3", "dataset.validate_interval_updates=3", "common.cpu=true",
                 "common.log_interval=1", "common.log_format=json", "dataset.num_workers=0"], {}, cwd=tmp_path)
    run = TrainLog.parse(log)
    assert "loading pretrained model from" in log and run.updates[-1] == 3
    assert run.valid and all("mrr" in r for r in run.valid), log[-3000:]
    assert (tmp_path / "ckpt" / "checkpoint_best.pt").exists()


def test_an_imported_hf_t5_continues_on_code_and_exports(tmp_path, spm_model):
    """import-hf of a T5ForConditionalGeneration -> code-dataset with its tokenizer -> code_mlm
    --restore-file -> export-hf: the ids stay T5's and the export matches fairseq."""
    from transformers import AutoTokenizer, T5EncoderModel, T5ForConditionalGeneration

    from support.hf_models import t5_dir

    hf = t5_dir(tmp_path / "hf-t5", spm_model, "gated-gelu", T5ForConditionalGeneration)
    src = tmp_path / "Lib"
    for pkg in ("json", "html"):
        shutil.copytree(STDLIB / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    start, data, ckpt = tmp_path / "start", tmp_path / "data", tmp_path / "ckpt"
    log = shell([str(BIN / "fairseq-ext"), "import-hf", str(hf), "-o", str(start)], {})
    assert "decoder" in log
    shell([str(BIN / "fairseq-ext"), "code-dataset", str(src), "-o", str(data), "--tokenizer", str(start),
           "--valid-ratio", "0.3", "--quiet"], {})
    unk = AutoTokenizer.from_pretrained(str(hf)).unk_token
    log = shell([sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", "fairseq_ext",
                 *(start / "model_args.txt").read_text().split(), "--task", "code_mlm",
                 "--criterion", "masked_lm_with_accuracy", "--mask-token", unk, "--tokens-per-sample", "64",
                 "--restore-file", str(start / "checkpoint.pt"), "--reset-optimizer", "--reset-dataloader",
                 "--reset-meters", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "1024", "--max-update", "5",
                 "--cpu", "--num-workers", "0", *JSON_LOG, "--log-interval", "1",
                 "--save-dir", str(ckpt), "--no-epoch-checkpoints"], {})
    assert "loaded checkpoint" in log.lower() and TrainLog.parse(log).updates[-1] == 5
    shell([str(BIN / "fairseq-ext"), "export-hf", str(ckpt / "checkpoint_last.pt"), "-o", str(tmp_path / "out")], {})
    before = T5ForConditionalGeneration.from_pretrained(str(hf)).encoder.state_dict()
    after = T5EncoderModel.from_pretrained(str(tmp_path / "out")).encoder.state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["block.0.layer.0.SelfAttention.q.weight"],
                           after["block.0.layer.0.SelfAttention.q.weight"])  # it trained
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(str(hf)).get_vocab() and tok.bos_token_id is None
