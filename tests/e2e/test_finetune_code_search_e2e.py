"""scripts/finetune_code_search.sh end to end, as a user runs it, from a tiny encoder of each family built here
(tests/support/st_models.py): a BERT sentence-transformers directory (mean pooling, Normalize), a bare RoBERTa
encoder with POOLING=first and separate towers, a T5 sentence-transformers directory (max pooling, Dense,
Normalize) with gradient caching. Each goes import-hf -> code-pairs with its tokenizer -> zero-shot
eval-retrieval -> code_contrastive -> export for sentence-transformers -> eval-retrieval; a rerun skips every
stage, and a higher UPDATES resumes training. Bad settings stop the script in one line before anything runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from functools import partial
from pathlib import Path

import pytest
import torch

from conftest import BIN, REPO, make_text, model_card_rows, shell
from support.st_models import bert_st_dir, roberta_encoder_dir, t5_st_dir
from support.training import TrainLog, checkpoint_updates

SCRIPT = ["bash", "scripts/finetune_code_search.sh"]
PACKAGES = ("json", "html", "http", "urllib")  # one project per standard-library package
UPDATES = 4
# Tiny and on CPU: the tiny encoders take 64 positions; JSON logs are read with TrainLog.
RUN = dict(LANGUAGES="python", VALID_RATIO="0.3", QUERY_TOKENS="32", KEY_TOKENS="48", BATCH_SIZE="8",
           UPDATES=str(UPDATES), WARMUP="1", LR="1e-3", INTERVAL="2", PRECISION="", NUM_WORKERS="0",
           EXTRA_TRAIN_ARGS="--cpu --log-format json --log-interval 1 --seed 3")
# family -> (builder of INIT_HF, its tokenizer fixture, the recipe's settings, the import's arch)
FAMILIES = {
    "bert": (partial(bert_st_dir, pooling="mean", normalize=True), "bert_dir", {}, "hf_bert"),
    "roberta": (roberta_encoder_dir, "bpe_dir", dict(POOLING="first", TOWERS="separate"), "hf_bert"),
    "t5": (partial(t5_st_dir, pooling="max", dense=16, normalize=True), "spm_model", dict(GRAD_CACHE_CHUNK="3"),
           "t5_encoder"),
}
TEXTS = [*make_text(3, seed=5), "def add(a, b):\n    return a + b\n"]


def st_encode(directory: Path, texts=TEXTS) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    return torch.as_tensor(model.encode(texts, show_progress_bar=False))


def pooling_mode(directory: Path) -> str:
    """The Pooling module's mode ("cls", "mean", "max"), in either of sentence-transformers' config layouts."""
    config = json.loads((directory / "1_Pooling" / "config.json").read_text())
    if "pooling_mode" in config:  # sentence-transformers >= 5.x
        return config["pooling_mode"]
    names = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
    (mode,) = [mode for key, mode in names.items() if config.get(key)]
    return mode


def module_types(directory: Path) -> list[str]:
    return [m["type"].rsplit(".", 1)[-1] for m in json.loads((directory / "modules.json").read_text())]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune-src")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for pkg in PACKAGES:
        shutil.copytree(stdlib / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def run(request, src, tmp_path_factory):
    """(family, INIT_HF, the environment, WORK, the log) of one whole run of the script."""
    build, tokenizer, settings, _arch = FAMILIES[request.param]
    root = tmp_path_factory.mktemp(f"finetune-{request.param}")
    init = build(root / "init-hf", request.getfixturevalue(tokenizer))
    env = dict(RUN, INIT_HF=str(init), SRC=str(src), WORK=str(root / "work"), **settings)
    return request.param, init, env, root / "work", shell(SCRIPT, env)


@pytest.mark.slow
def test_the_script_imports_trains_from_the_import_exports_and_measures(run):
    from fairseq_ext.serialization import safe_torch_load

    family, init, env, work, log = run
    args = (work / "init" / "model_args.txt").read_text().split()
    assert args[args.index("--arch") + 1] == FAMILIES[family][3] and "code_contrastive" in args
    stage = TrainLog.parse(log[log.index("fairseq_cli.train"):])
    assert f"loading pretrained model from {work / 'init' / 'checkpoint.pt'}" in log
    assert stage.last_update == UPDATES and checkpoint_updates(work / "contrastive" / "checkpoint_last.pt") == UPDATES
    valid = stage.values("valid", "mrr")
    pairs = json.loads((work / "code-pairs" / "code_pairs.json").read_text())["splits"]["valid"]["pairs"]
    assert len(valid) >= 2 and all(r["pool"] == str(pairs) for r in stage.valid), stage.valid  # the whole pool
    with open(work / "contrastive" / "checkpoint_best.pt", "rb") as f:
        best = safe_torch_load(f, map_location="cpu")
    assert best["task_state"]["retrieval"]["mrr"] == pytest.approx(max(valid), abs=1e-3)
    # the measurement of the fine-tuned model (the sentence-transformers export, or the checkpoint's two towers)
    # is validation's, and the start's is on the same pool, both beside BM25 and on the renamed pool
    after = json.loads((work / "eval-retrieval.json").read_text())
    before = json.loads((work / "eval-zero-shot.json").read_text())
    assert after["pool"]["scores"]["model"]["mrr"] == pytest.approx(best["task_state"]["retrieval"]["mrr"], abs=1e-4)
    assert after["separate_towers"] == (env.get("TOWERS") == "separate")
    for measured in (before, after):
        assert measured["pool"]["pairs"] == pairs and measured["renamed"]["pairs"] > 0
        assert {"BM25", "model"} <= set(measured["pool"]["scores"]) <= set(measured["renamed"]["scores"])
    assert f"pool MRR ({pairs} pairs): start {before['pool']['scores']['model']['mrr']:.4f}" in log


@pytest.mark.slow
def test_the_export_loads_in_sentence_transformers_pools_as_the_start_and_was_trained(run):
    family, init, env, work, _log = run
    exported = module_types(work / "st-model")
    if (init / "modules.json").exists():
        assert exported == module_types(init)  # the same Pooling/Dense/Normalize as the model it started from
        assert pooling_mode(work / "st-model") == pooling_mode(init)
        assert not torch.allclose(st_encode(work / "st-model"), st_encode(init), atol=1e-4)  # it trained
    else:
        assert pooling_mode(work / "st-model") == "cls"  # POOLING=first
    if env.get("TOWERS") == "separate":  # the key tower too, a model of its own that embeds otherwise
        assert module_types(work / "st-model-keys") == exported
        assert not torch.allclose(st_encode(work / "st-model"), st_encode(work / "st-model-keys"), atol=1e-6)
    card = (work / "st-model" / "README.md").read_text()
    rows = model_card_rows(card)
    assert "pipeline_tag: sentence-similarity" in card
    assert rows["objective"].startswith("code_contrastive (contrastive InfoNCE over query/key pairs")
    assert rows["started from"].startswith(f"`{init}`") and "validation mrr" in rows  # carried on from the import


@pytest.mark.slow
@pytest.mark.parametrize("run", ["bert", "t5"], indirect=True)  # the sentence-transformers directories
def test_zero_shot_measures_the_directory_it_started_from(run, tmp_path):
    _family, init, env, work, _log = run
    shell([str(BIN / "fairseq-ext"), "eval-retrieval", str(init), "--pairs", str(work / "code-pairs"),
           "--max-query-tokens", env["QUERY_TOKENS"], "--max-key-tokens", env["KEY_TOKENS"],
           "--json", str(tmp_path / "direct.json"), "--quiet"], {})
    direct = json.loads((tmp_path / "direct.json").read_text())["pool"]["scores"]["model"]
    zero_shot = json.loads((work / "eval-zero-shot.json").read_text())["pool"]["scores"]["model"]
    assert zero_shot == pytest.approx(direct, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["bert"], indirect=True)  # the script's resumption is the same for every family
def test_a_rerun_skips_every_stage_and_more_updates_resume(run):
    _family, _init, env, work, _log = run
    stamps = {p: p.stat().st_mtime_ns for p in (work / "init" / "checkpoint.pt", work / "eval-zero-shot.json",
                                                work / "st-model" / "modules.json", work / "eval-retrieval.json")}
    log = shell(SCRIPT, env)
    assert "fairseq_cli.train" not in log and "wrote" not in log, log[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # sides longer than the model's positions: one line, before anything runs (the import's model_args.txt says)
    log = shell(SCRIPT, dict(env, KEY_TOKENS="65"), check=False)
    assert log.splitlines()[-1] == (f"finetune_code_search.sh: KEY_TOKENS=65 is longer than the model's 64 positions "
                                    f"(--max-positions in {work / 'init'}/model_args.txt)"), log[-2000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    log = shell(SCRIPT, dict(env, UPDATES=str(UPDATES + 2)))
    assert f"{work / 'contrastive' / 'checkpoint_last.pt'} (epoch" in log and "loading pretrained" not in log
    assert TrainLog.parse(log).last_update == UPDATES + 2
    assert "wrote " + str(work / "init") not in log and "wrote " + str(work / "code-pairs") not in log
    assert (work / "st-model" / "modules.json").stat().st_mtime_ns > stamps[work / "st-model" / "modules.json"]
    assert (work / "eval-retrieval.json").stat().st_mtime_ns > stamps[work / "eval-retrieval.json"]


# Bad settings: one line naming the variable, exit 2, nothing written (quick: no Python runs).
@pytest.mark.parametrize("settings, message", [
    (dict(INIT_HF=""), "set INIT_HF"),
    (dict(INIT_HF="{tmp}/nowhere"), "INIT_HF={tmp}/nowhere: no such directory"),
    (dict(INIT_HF="{bare}"), "INIT_HF={bare} has no modules.json (a bare encoder): set POOLING=mean, first or max"),
    (dict(INIT_HF="{bare}", POOLING="cls"), "POOLING must be one of first mean max, got 'cls'"),
    (dict(SRC=""), "set SRC"),
    (dict(SRC="{tmp}/no-src"), "SRC: no such file or directory: {tmp}/no-src"),
    (dict(TOWERS="two"), "TOWERS must be one of shared separate, got 'two'"),
    (dict(PAIR_KIND="all"), "PAIR_KIND must be one of docstring span both, got 'all'"),
    (dict(LR="fast"), "LR must be a number above 0, got 'fast'"),
    (dict(TEMPERATURE="0"), "TEMPERATURE must be a number above 0, got '0'"),
    (dict(BATCH_SIZE="-8"), "BATCH_SIZE must be a whole number, got '-8'"),
    (dict(UPDATES="0"), "UPDATES must be at least 1, got '0'"),
    (dict(UPDATES="10", WARMUP="10"), "WARMUP (10) must be below UPDATES (10)"),
])
def test_bad_settings_stop_in_one_line_before_anything_runs(tmp_path, settings, message):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    (tmp_path / "src").mkdir()
    env = dict(INIT_HF=str(bare), POOLING="mean", SRC=str(tmp_path / "src"), WORK=str(tmp_path / "work"))
    env.update({k: v.format(tmp=tmp_path, bare=bare) for k, v in settings.items()})
    if settings.get("INIT_HF") == "{bare}" and "POOLING" not in settings:
        env["POOLING"] = ""
    proc = subprocess.run(SCRIPT, cwd=REPO, env=dict(os.environ, **env), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    lines, expected = proc.stderr.splitlines(), message.format(tmp=tmp_path, bare=bare)
    assert len(lines) == 1 and lines[0].startswith(f"finetune_code_search.sh: {expected}"), lines
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.parametrize("run", ["bert"], indirect=True)
def test_the_contrastive_hydra_config_fine_tunes_the_import(run, tmp_path):
    """scripts/hydra/pretrain_code_contrastive.yaml from INIT_HF: the import's hydra_overrides.txt gives the model
    (family, sizes, pooling, similarity), checkpoint.finetune_from_model its weights."""
    import sys

    _family, _init, env, work, _log = run
    overrides = (work / "init" / "hydra_overrides.txt").read_text().split()
    hydra = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]
    log = shell([*hydra, "--config-dir", str(REPO / "scripts" / "hydra"), "--config-name", "pretrain_code_contrastive",
                 f"task.data={work / 'code-pairs'}", f"common.user_dir={REPO / 'fairseq_ext'}",
                 f"checkpoint.save_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'hydra'}",
                 f"checkpoint.finetune_from_model={work / 'init' / 'checkpoint.pt'}", *overrides,
                 f"task.max_query_tokens={env['QUERY_TOKENS']}", f"task.max_key_tokens={env['KEY_TOKENS']}",
                 "dataset.max_tokens=640", "optimization.max_update=3", "dataset.validate_interval_updates=3",
                 "common.cpu=true", "common.log_interval=1", "common.log_format=json", "dataset.num_workers=0"], {},
                cwd=tmp_path)
    trained = TrainLog.parse(log)
    assert f"loading pretrained model from {work / 'init' / 'checkpoint.pt'}" in log and trained.updates[-1] == 3
    assert "BertFairseqModel" in log or "hf_bert" in log, log[-3000:]
    assert trained.valid and all("mrr" in r for r in trained.valid), log[-3000:]
    assert checkpoint_updates(tmp_path / "ckpt" / "checkpoint_best.pt") == 3


def test_the_code_mlm_recipe_sends_a_sentence_transformers_start_to_this_script(tmp_path):
    """scripts/pretrain_code.sh's masked-LM stage cannot train a sentence encoder's contrastive import: one line."""
    st_dir = tmp_path / "st"
    st_dir.mkdir()
    (st_dir / "modules.json").write_text("[]")
    (tmp_path / "src").mkdir()
    env = dict(os.environ, INIT_HF=str(st_dir), SRC=str(tmp_path / "src"), WORK=str(tmp_path / "work"))
    proc = subprocess.run(["bash", "scripts/pretrain_code.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"pretrain_code.sh: INIT_HF={st_dir} is a sentence-transformers model (modules.json): fine-tune it with "
        "scripts/finetune_code_search.sh, or set CONTRASTIVE=only (the code MLM stage needs an HF T5 encoder)"]
    assert not (tmp_path / "work").exists()
