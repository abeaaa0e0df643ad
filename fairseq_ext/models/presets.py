"""Named architectures are tables of settings over one builder.

An architecture function fills, in this order, what the command line or
config left unset (absent or ``None``): the preset's own values, then the
defaults of the model's config dataclass (or of fairseq's own builder for the
models fairseq registers).
"""

from __future__ import annotations

import dataclasses
from argparse import Namespace
from typing import Any

from omegaconf import OmegaConf, open_dict


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


def settings_namespace(cfg: Any, default_arch: str) -> Namespace:
    """The values ``cfg`` sets, as a fresh Namespace with ``arch`` (``cfg``: the parsed command line,
    a hydra/checkpoint ``DictConfig``, a plain dict or a config dataclass; it is not changed).
    ``arch`` is ``cfg``'s ``arch`` or hydra's ``_name``, else ``default_arch``."""
    if OmegaConf.is_config(cfg):
        values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    elif isinstance(cfg, dict):
        values = dict(cfg)
    else:
        values = dict(vars(cfg))
    values = {k: v for k, v in values.items() if v is not None}
    args = Namespace(**values)
    args.arch = values.get("arch") or values.get("_name") or default_arch
    return args


def record_setting(cfg: Any, key: str, value: Any) -> None:
    """Write ``value`` as ``cfg``'s ``key`` (a Namespace, dict or DictConfig, struct or not): for a setting
    resolved while the model is built, so that the settings fairseq saves in the checkpoint say it and a
    reader that builds the model without the task (export-hf) gets the same model."""
    if OmegaConf.is_config(cfg):
        with open_dict(cfg):
            cfg[key] = value
    elif isinstance(cfg, dict):
        cfg[key] = value
    else:
        setattr(cfg, key, value)
