"""The table of conversion families: every entry complete, export/import generic, unknown names one-line errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import fairseq_ext
from fairseq_ext.convert.common import ConversionError
from fairseq_ext.convert.family import Family
from fairseq_ext.convert.registry import (
    FAMILIES,
    checkpoint_model_settings,
    choosable,
    export_family,
    for_fairseq_model,
    for_model_type,
)

PACKAGE = Path(fairseq_ext.__file__).parent
GENERIC = ["convert/export.py", "convert/import_hf.py", "convert/settings.py", "cli/export_hf.py", "cli/import_hf.py",
           "convert/sentence_transformers.py", "convert/embedding_card.py"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_entry_is_complete(name):
    import transformers
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY
    from transformers.pipelines import SUPPORTED_TASKS

    fairseq_ext.register()
    family = FAMILIES[name]
    assert family.name == name
    for f in dataclasses.fields(Family):
        value = getattr(family, f.name)
        if f.name == "input_names":
            assert value is None or set(value) <= {"input_ids", "attention_mask", "token_type_ids"}
        elif f.name == "card_notes":
            assert isinstance(value, str)
        elif f.type.startswith("Callable"):
            assert callable(value), f.name
        elif f.type.startswith("Optional[Callable"):  # what only some families have (towers, a pooled embedding)
            assert value is None or callable(value), f.name
        else:
            assert value, f"{name}: {f.name} is empty"
    assert hasattr(transformers, family.hf_class)
    assert family.pipeline_tag in SUPPORTED_TASKS
    assert set(family.default_for) <= set(family.fairseq_models)
    flags = dict(zip(family.train_flags[::2], family.train_flags[1::2]))
    assert set(flags) == {"--task", "--criterion"}
    assert flags["--task"] in TASK_REGISTRY and flags["--criterion"] in CRITERION_REGISTRY
    for model in family.fairseq_models:
        assert model in MODEL_REGISTRY
        assert family in for_fairseq_model(model, model, "x")
        for arch in sorted(a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == model):  # each with its defaults
            s = checkpoint_model_settings({"cfg": {"model": {"_name": arch}, "task": {"tokens_per_sample": 64}}}, arch)
            assert s.model == model and isinstance(s.positions, int) and s.positions > 0, arch


def test_names_and_defaults_are_unambiguous():
    types = [t for f in FAMILIES.values() for t in f.model_types]
    assert len(types) == len(set(types))  # one family imports each model_type
    for model in {m for f in FAMILIES.values() for m in f.fairseq_models}:  # and one is each model's default
        assert sum(model in f.default_for for f in FAMILIES.values()) == 1, model
        assert export_family(model, None, None) is for_fairseq_model(model, model, "x")[0]
    for family in FAMILIES.values():
        assert for_model_type(family.model_types[0], "d") is family
    assert choosable() == ["bert", "roberta"]  # the two that share their fairseq models
    assert export_family("hf_bert", "roberta", None).name == "roberta"  # where an hf_bert came from
    assert export_family("roberta", None, "bert").name == "bert"


def test_unknown_model_type_family_or_architecture_lists_the_registered_ones():
    types = sorted(t for f in FAMILIES.values() for t in f.model_types)
    with pytest.raises(ConversionError) as err:
        for_model_type("gpt2", "some/dir")
    assert str(err.value) == f"some/dir: model_type 'gpt2'; import-hf converts {', '.join(types)} models"
    with pytest.raises(ConversionError) as err:
        export_family("roberta", None, "gpt2")
    assert str(err.value) == "an encoder checkpoint exports as bert or roberta, not 'gpt2'"
    with pytest.raises(ConversionError) as err:
        export_family("bart", None, "bert")
    assert str(err.value) == "a BART checkpoint exports as bart, not 'bert'"
    with pytest.raises(ConversionError) as err:
        for_fairseq_model("transformer_lm", "transformer_lm_gpt", "c.pt")
    message = str(err.value)
    assert message.startswith("c.pt: unknown architecture 'transformer_lm_gpt': export-hf converts ")
    assert "\n" not in message and all(f.checkpoints in message for f in FAMILIES.values())


def test_export_and_import_never_name_a_family():
    names = {n for f in FAMILIES.values() for n in (f.name, *f.model_types)} | {"t5"}
    pattern = re.compile("[\"'](" + "|".join(sorted(names)) + ")[\"']")
    for rel in GENERIC:
        text = (PACKAGE / rel).read_text(encoding="utf-8")
        assert not pattern.findall(text), f"{rel} names a family: {pattern.findall(text)}"


def test_one_tolerance_for_every_family_and_direction():
    """export-hf and import-hf refuse the same way when the two models' outputs differ (a NaN included)."""
    from fairseq_ext.convert.common import TOLERANCE, check_parity

    assert check_parity(TOLERANCE, "ckpt.pt") == TOLERANCE
    for diff in (2 * TOLERANCE, float("nan")):
        with pytest.raises(ConversionError, match=r"^ckpt.pt: fairseq and transformers outputs differ by .* "
                                                  r"\(> 0.0001\); nothing written$"):
            check_parity(diff, "ckpt.pt")


def test_padding_rows_are_seeded():
    """fairseq's vocabulary padding is the same for the same seed in every family (export drops it again)."""
    import torch

    from fairseq_ext.convert.common import pad_rows

    emb = torch.randn(5, 4)
    a, b, c = pad_rows(emb, 8, 0.02, seed=3), pad_rows(emb, 8, 0.02, seed=3), pad_rows(emb, 8, 0.02, seed=4)
    assert torch.equal(a[:5], emb) and torch.equal(a, b) and not torch.equal(a[5:], c[5:])
    assert float(a[5:].std()) < 0.1 and pad_rows(emb, 5, 0.02) is emb
