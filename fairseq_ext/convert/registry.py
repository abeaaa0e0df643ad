"""The one table of model families that export-hf and import-hf convert; each family is its own module.

A new family is a module that builds a :class:`~fairseq_ext.convert.family.Family`
and one line in :data:`FAMILIES`; export and import never name a family.
"""

from __future__ import annotations

import dataclasses

from fairseq_ext.convert.common import ConversionError
from fairseq_ext.convert.families import bart, bert, t5
from fairseq_ext.convert.family import Family
from fairseq_ext.convert.settings import CheckpointModelSettings, section

# in the order messages list them
FAMILIES: dict[str, Family] = {f.name: f for f in (bart.FAMILY, bert.ROBERTA, bert.BERT, t5.FAMILY)}


def for_model_type(model_type: str, where) -> Family:
    """The family that imports a transformers ``model_type``, or an error listing those that do."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ConversionError(f"{where}: model_type {model_type!r}; import-hf converts {', '.join(known)} models")


def for_fairseq_model(model: str | None, arch: str, where) -> list[Family]:
    """The families a registered fairseq model exports to (its default first), or an error listing them."""
    found = [f for f in FAMILIES.values() if model in f.fairseq_models]
    if not found:
        known = [f.checkpoints for f in FAMILIES.values()]
        listed = ", ".join(known[:-1]) + f" and {known[-1]}" if len(known) > 1 else known[0]
        raise ConversionError(f"{where}: unknown architecture {arch!r}: export-hf converts {listed} checkpoints")
    return sorted(found, key=lambda f: model not in f.default_for)


def export_family(model: str, hf_model_type: str | None, requested: str | None) -> Family:
    """The family a checkpoint of fairseq ``model`` exports to: ``requested`` if it is one it can go to,
    else the family it came from (``hf_model_type``, as ``hf_bert`` records it), else the model's default."""
    found = for_fairseq_model(model, model, "checkpoint")
    names = [f.name for f in found]
    if requested is None:
        return FAMILIES[hf_model_type] if hf_model_type in names else found[0]
    if requested not in names:
        raise ConversionError(f"{found[0].checkpoint_kind} exports as {' or '.join(sorted(names))}, "
                              f"not {requested!r}")
    return FAMILIES[requested]


def choosable() -> list[str]:
    """The families --family can pick: those that share their fairseq models with another family."""
    return sorted(f.name for f in FAMILIES.values()
                  if any(set(f.fairseq_models) & set(g.fairseq_models) for g in FAMILIES.values() if g is not f))


def checkpoint_model_settings(state: dict, path) -> CheckpointModelSettings:
    """The model settings of a loaded checkpoint, defaults filled by its architecture."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    values = {k: v for k, v in section(state, "model").items() if v is not None}
    if not values:
        raise ConversionError(f"{path}: checkpoint has no model settings (cfg.model / args)")
    arch = str(values.get("arch") or values.get("_name") or "")
    model = ARCH_MODEL_NAME_REGISTRY.get(arch)
    family = for_fairseq_model(model, arch, path)[0]
    args = family.fill_settings(dict(values, arch=arch), model, section(state, "task"))
    known = {f.name for f in dataclasses.fields(CheckpointModelSettings)} - {"arch", "model", "args", "positions"}
    filled = {k: v for k, v in vars(args).items() if k in known}
    filled.update({k: str(filled[k]) for k in ("activation_fn", "hf_model_type") if filled.get(k) is not None})
    try:
        return CheckpointModelSettings(arch=arch, model=model, args=args,
                                       positions=vars(args).get(family.positions_setting), **filled)
    except TypeError as exc:  # a required setting the architecture does not fill either
        raise ConversionError(f"{path}: checkpoint model settings incomplete ({exc})") from None
