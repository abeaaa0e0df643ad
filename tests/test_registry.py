"""Every fairseq registry key fairseq_ext registers resolves to our class (fairseq silently keeps the first
class registered under a name, so a key that collided with fairseq's own would quietly run fairseq's)."""

from __future__ import annotations

import pytest
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.data.encoders import build_bpe  # noqa: F401  (fills the registries of --bpe)
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.registry import REGISTRIES
from fairseq.tasks import TASK_REGISTRY

from fairseq_ext.criterions.cross_entropy_with_accuracy import CrossEntropyWithAccuracy
from fairseq_ext.criterions.info_nce import InfoNCECriterion
from fairseq_ext.criterions.masked_lm_with_accuracy import MaskedLMWithAccuracy
from fairseq_ext.data.encoders.hf_tokenizer import HFTokenizerBPE
from fairseq_ext.models.bart import bart_small_architecture
from fairseq_ext.models.bert import BertModel, bert_base_named_architecture, bert_large_architecture
from fairseq_ext.models.roberta import roberta_small_architecture
from fairseq_ext.models.t5.model import (
    T5EncoderFairseqModel,
    t5_encoder_base_architecture,
    t5_encoder_small_architecture,
)
from fairseq_ext.tasks.code_contrastive import CodeContrastiveTask
from fairseq_ext.tasks.code_mlm import CodeMLMTask
from fairseq_ext.tasks.hf_denoising import HFDenoisingTask
from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMTask

CLASSES = {  # (registry, key) -> our class
    ("task", "hf_denoising"): HFDenoisingTask,
    ("task", "hf_masked_lm"): HFMaskedLMTask,
    ("task", "code_mlm"): CodeMLMTask,
    ("task", "code_contrastive"): CodeContrastiveTask,
    ("criterion", "cross_entropy_with_accuracy"): CrossEntropyWithAccuracy,
    ("criterion", "masked_lm_with_accuracy"): MaskedLMWithAccuracy,
    ("criterion", "info_nce"): InfoNCECriterion,
    ("bpe", "hf_tokenizer"): HFTokenizerBPE,
    ("model", "hf_bert"): BertModel,
    ("model", "t5_encoder"): T5EncoderFairseqModel,
}
ARCHITECTURES = {  # --arch -> (the model it builds: our class or fairseq's by name; its architecture function,
    # None where any of ours will do)
    "bart_small": ("BARTModel", bart_small_architecture),
    "roberta_small": ("RobertaModel", roberta_small_architecture),
    "hf_bert": (BertModel, None),
    "hf_bert_base": (BertModel, bert_base_named_architecture),
    "hf_bert_large": (BertModel, bert_large_architecture),
    "t5_encoder": (T5EncoderFairseqModel, None),
    "t5_encoder_small": (T5EncoderFairseqModel, t5_encoder_small_architecture),
    "t5_encoder_base": (T5EncoderFairseqModel, t5_encoder_base_architecture),
}


def registry(kind: str) -> dict:
    return {"task": TASK_REGISTRY, "criterion": CRITERION_REGISTRY, "model": MODEL_REGISTRY}.get(kind) or \
        REGISTRIES[kind]["registry"]


@pytest.mark.parametrize("kind,key", list(CLASSES), ids=[f"{k}:{n}" for k, n in CLASSES])
def test_registry_key_resolves_to_our_class(kind, key):
    assert registry(kind)[key] is CLASSES[(kind, key)]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architecture_resolves_to_its_model_and_our_preset(arch):
    model, function = ARCHITECTURES[arch]
    if isinstance(model, str):  # fairseq's own model, our preset on it
        built = ARCH_MODEL_REGISTRY[arch]
        assert built.__name__ == model and built.__module__.startswith("fairseq."), built
    else:
        assert ARCH_MODEL_REGISTRY[arch] is model
    if function is not None:
        assert ARCH_CONFIG_REGISTRY[arch] is function
    assert ARCH_CONFIG_REGISTRY[arch].__module__.startswith("fairseq_ext."), ARCH_CONFIG_REGISTRY[arch]


def test_every_key_we_register_is_in_the_table():
    """A new registered component must be added above (and so checked)."""
    ours = {(kind, key) for kind, table in (("task", TASK_REGISTRY), ("criterion", CRITERION_REGISTRY),
                                             ("model", MODEL_REGISTRY), ("bpe", REGISTRIES["bpe"]["registry"]))
            for key, cls in table.items() if cls.__module__.startswith("fairseq_ext.")}
    assert ours == set(CLASSES)
    archs = {a for a, fn in ARCH_CONFIG_REGISTRY.items() if fn.__module__.startswith("fairseq_ext.")}
    assert archs == set(ARCHITECTURES)
