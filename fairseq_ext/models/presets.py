"""Named architectures are tables of settings over one builder.

An architecture function fills, in this order, what the command line or
config left unset (absent or ``None``): the preset's own values, then the
defaults of the model's config dataclass (or of fairseq's own builder for the
models fairseq registers).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def apply_preset(args: Any, preset: dict) -> None:
    """Set each preset value the user did not set (``args``: a Namespace or an open DictConfig)."""
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def dataclass_defaults(config_cls) -> dict:
    """Field name -> default of a (fairseq) config dataclass; fields without a default are left out."""
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
