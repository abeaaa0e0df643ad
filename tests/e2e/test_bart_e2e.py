"""The BART recipe end to end: hf_denoising training, export to transformers with parity,
import back, continue training, and the real clients (generate, a fine-tuning loop, fairseq's hub).

Two tokenizer families (byte-level BPE with pad=1, BERT WordPiece with pad=0) and
two model sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, error_lines, make_text, model_card_rows, run_cli
from support.training import JSON_LOG, TrainLog, fairseq_train

pytestmark = pytest.mark.slow

SIZES = {
    "bpe": ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
            "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
            "--decoder-attention-heads", "2"],
    "bert": ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim",
             "32", "--encoder-ffn-embed-dim", "96", "--decoder-ffn-embed-dim", "96", "--encoder-attention-heads", "4",
             "--decoder-attention-heads", "4"],
}
COMMON = ["--task", "hf_denoising", "--arch", "bart_small", "--criterion", "cross_entropy_with_accuracy",
          "--share-all-embeddings", "--tokens-per-sample", "64", "--max-source-positions", "64",
          "--max-target-positions", "64", "--max-tokens", "1024", "--optimizer", "adam", "--lr", "2e-3",
          "--cpu", "--num-workers", "0", "--log-interval", "1", "--no-epoch-checkpoints",
          "--seed", "2"]


@pytest.fixture(scope="module", params=["bpe", "bert"])
def trained(request, tmp_path_factory, bpe_dir, bert_dir):
    family = request.param
    root = tmp_path_factory.mktemp(f"bart-{family}")
    lines = make_text(600, seed=11)
    text = "\n".join(line + ("\n" if i % 3 == 2 else "") for i, line in enumerate(lines)) + "\n"
    (root / "train.txt").write_text(text, encoding="utf-8")
    (root / "valid.txt").write_text("\n".join(make_text(60, seed=12)) + "\n", encoding="utf-8")
    tok = bpe_dir if family == "bpe" else bert_dir
    run_cli("binarize", "--tokenizer", str(tok), "--train", str(root / "train.txt"), "--valid",
            str(root / "valid.txt"), "-o", str(root / "bin"), "--max-line-tokens", "62", "--quiet")
    log = fairseq_train(root / "bin", "--user-dir", "fairseq_ext", *COMMON, *SIZES[family],
                        "--max-update", "12", "--save-dir", root / "ckpt", console_script=False)
    return family, root, log


def test_validation_reports_accuracy(trained):
    _, _, log = trained
    assert log.valid and {"accuracy", "loss", "ppl"} <= log.valid[-1].keys(), log.valid


def test_export_parity_and_transformers_loads_it(trained):
    from transformers import AutoTokenizer, BartForConditionalGeneration

    family, root, _ = trained
    out = root / "hf"
    proc = run_cli("export-hf", str(root / "ckpt" / "checkpoint_last.pt"), "-o", str(out))
    figure = float(proc.stdout.split("= ")[1].split()[0])
    assert figure <= 1e-4
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    model = BartForConditionalGeneration.from_pretrained(str(out), local_files_only=True).eval()
    assert model.config.vocab_size == len(tok)
    card = model_card_rows((out / "README.md").read_text())
    c = model.config
    flags = dict(zip(SIZES[family][::2], SIZES[family][1::2]))
    assert (c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim) == (
        int(flags["--encoder-layers"]), int(flags["--decoder-layers"]), int(flags["--encoder-embed-dim"]),
        int(flags["--encoder-attention-heads"]), int(flags["--encoder-ffn-embed-dim"]))
    assert card["architecture"] == (f"bart_small: {c.encoder_layers}+{c.decoder_layers} layers, d_model {c.d_model}, "
                                    f"{c.encoder_attention_heads} heads, FFN {c.encoder_ffn_dim}, "
                                    f"{model.num_parameters():,} parameters")
    from fairseq_ext.serialization import safe_torch_load

    with open(root / "ckpt" / "checkpoint_last.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert card["updates"] == "12" == str(state["optimizer_history"][-1]["num_updates"])
    assert card["validation loss"] == f"{float(state['extra_state']['val_loss']):.4f} (base 2)"
    assert card["training data"] == f"`{root / 'bin'}`"
    assert card["tokenizer"].endswith("(64 positions)")
    assert card["export parity"].startswith(f"max abs logit difference {figure:.2e} vs. fairseq")
    assert card["objective"].startswith("hf_denoising (BART text infilling: mask=0.3, mask_length=span-poisson")

    # an independent check: fairseq's own hub model against the exported one, on real text
    from fairseq.models.bart import BARTModel

    hub = BARTModel.from_pretrained(str(root / "ckpt"), checkpoint_file="checkpoint_last.pt",
                                    data_name_or_path=str(root / "bin"), bpe="hf_tokenizer").eval()
    ids = tok("Curious students read books about language models.", return_tensors="pt").input_ids
    prev = torch.cat([ids[:, -1:], ids[:, :-1]], dim=1)  # eos first, as BART's decoder starts
    with torch.no_grad():
        fs = hub.model(ids, torch.tensor([ids.size(1)]), prev)[0][..., : len(tok)]
        hf = model(input_ids=ids, decoder_input_ids=prev).logits
    assert (fs - hf).abs().max() <= 1e-4

    # the real clients: generate infills, and a plain fine-tuning loop learns
    masked = tok(f"The quick {tok.mask_token} jumps over the lazy dog.", return_tensors="pt")
    generated = model.generate(**masked, max_new_tokens=20, num_beams=2)
    assert generated.shape[0] == 1 and isinstance(tok.decode(generated[0], skip_special_tokens=True), str)
    batch = tok(["The quick brown fox jumps.", "A patient teacher explains."], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.input_ids == tok.pad_token_id, -100)
    torch.manual_seed(0)  # dropout: the same run every time
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_import_then_export_is_bit_identical_and_training_continues(trained):
    family, root, _ = trained
    hf = root / "hf-rt"
    run_cli("export-hf", str(root / "ckpt" / "checkpoint_last.pt"), "-o", str(hf))
    run_cli("import-hf", str(hf), "-o", str(root / "imported"))
    run_cli("export-hf", str(root / "imported" / "checkpoint.pt"), "-o", str(root / "hf-again"))
    a, b = load_file(hf / "model.safetensors"), load_file(root / "hf-again" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert json.loads((hf / "config.json").read_text())["vocab_size"] == \
        json.loads((root / "hf-again" / "config.json").read_text())["vocab_size"]
    model_flags = (root / "imported" / "model_args.txt").read_text().split()  # the sizes, from the import
    assert model_flags[:2] == ["--arch", "bart_base"]
    log = fairseq_train(root / "bin", "--user-dir", "fairseq_ext", *COMMON, *model_flags,
                        "--max-update", "2", "--save-dir", root / "ckpt-cont",
                        "--restore-file", root / "imported" / "checkpoint.pt",
                        "--reset-optimizer", "--reset-dataloader", "--reset-meters", console_script=False)
    assert "Loaded checkpoint" in log.text and log.updates[-1] == 2


# fairseq's BART hub spells <s>/</s> literally: it works with the byte-level BPE layout only
@pytest.mark.parametrize("trained", ["bpe"], indirect=True)
def test_fairseq_hub_fill_mask_with_our_bpe(trained):
    family, root, _ = trained
    from fairseq.models.bart import BARTModel

    hub = BARTModel.from_pretrained(str(root / "ckpt"), checkpoint_file="checkpoint_last.pt",
                                    data_name_or_path=str(root / "bin"), bpe="hf_tokenizer").eval()
    filled = hub.fill_mask(["The quick <mask> jumps over the lazy dog."], topk=2)
    assert len(filled[0]) == 2 and all(isinstance(text, str) for text, _score in filled[0])


def test_mismatched_tokenizer_is_refused(trained, bpe_dir, bert_dir):
    family, root, _ = trained
    other = bert_dir if family == "bpe" else bpe_dir
    proc = run_cli("export-hf", str(root / "ckpt" / "checkpoint_last.pt"), "-o", str(root / "bad"),
                   "--tokenizer", str(other), check=False)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    # the checkpoint records its tokenizer: the line names both sides, sizes and special ids
    ckpt = root / "ckpt" / "checkpoint_last.pt"
    assert f"checkpoint {ckpt} was made with a tokenizer of" in line and f"{other} has" in line
    assert ("[MASK]=103" in line) and ("<mask>=" in line)
    assert not (root / "bad").exists()


@pytest.mark.parametrize("trained", ["bpe"], indirect=True)  # one tokenizer family is enough for the config file
def test_hydra_config_trains(trained, tmp_path):
    family, root, _ = trained
    hydra = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]
    tiny = [f"+model.{k}={v}" for k, v in dict(encoder_layers=1, decoder_layers=1, encoder_embed_dim=32,
                                                decoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                                decoder_ffn_embed_dim=64, encoder_attention_heads=2,
                                                decoder_attention_heads=2).items()]
    proc = subprocess.run(
        [*hydra, "--config-dir", str(REPO / "scripts" / "hydra"), "--config-name", "pretrain_bart",
         f"task.data={root / 'bin'}", f"common.user_dir={REPO / 'fairseq_ext'}", f"checkpoint.save_dir={tmp_path}",
         "task.tokens_per_sample=64", "optimization.max_update=2", "dataset.max_tokens=1024", "common.cpu=true",
         "common.log_interval=1", "common.log_format=json", "dataset.num_workers=0",
         f"hydra.run.dir={tmp_path / 'hydra'}", *tiny],
        capture_output=True, text=True, cwd=tmp_path)
    log = TrainLog.parse(proc.stdout + proc.stderr)
    assert proc.returncode == 0, log.text[-3000:]
    assert log.updates[-1] == 2 and all("accuracy" in r for r in log.of("train_inner"))
    assert (tmp_path / "checkpoint_last.pt").exists()
    # the same command again resumes (fairseq's BART reads args.task on load, which hydra's settings lack)
    again = [a.replace("optimization.max_update=2", "optimization.max_update=3") for a in proc.args]
    proc = subprocess.run(again, capture_output=True, text=True, cwd=tmp_path)
    log = TrainLog.parse(proc.stdout + proc.stderr)
    assert proc.returncode == 0, log.text[-3000:]
    assert "Loaded checkpoint" in log.text and "@ 2 updates)" in log.text and log.updates == [3]
    proc = run_cli("export-hf", str(tmp_path / "checkpoint_last.pt"), "-o", str(tmp_path / "hf"))  # its settings
    assert float(proc.stdout.split("= ")[1].split()[0]) <= 1e-4 and "3 updates" in proc.stdout  # are a dict


def test_pretrain_bart_script_runs_the_whole_recipe(tmp_path):
    """scripts/pretrain_bart.sh as a user runs it (CPU, tiny sizes through its variables)."""
    (tmp_path / "books").mkdir()
    for i in range(6):
        (tmp_path / "books" / f"book{i}.txt").write_text("\n".join(make_text(80, seed=20 + i)) + "\n")
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               RAW=str(tmp_path / "books"), WORK=str(tmp_path / "run"), VOCAB="400", TOKENS_PER_SAMPLE="64",
               MAX_TOKENS="1024", UPDATE_FREQ="1", MAX_UPDATE="6", WARMUP="1", PRECISION="",
               EXTRA_TRAIN_ARGS=" ".join(SIZES["bpe"] + ["--cpu", "--num-workers", "0", "--log-interval", "1",
                                                         "--max-source-positions", "64",
                                                         "--max-target-positions", "64", *JSON_LOG]))
    proc = subprocess.run(["bash", "scripts/pretrain_bart.sh"], capture_output=True, text=True, cwd=REPO, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert TrainLog.parse(log).updates[-1] == 6 and "parity: max |logit difference|" in log
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(str(tmp_path / "run" / "hf-model"))
    assert model.config.encoder_layers == 1 and model.config.vocab_size == 400
