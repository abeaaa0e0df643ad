"""Named architectures are tables of settings over fairseq's own builders."""

from argparse import Namespace


def apply_preset(args: Namespace, preset: dict) -> None:
    """Set each preset value the user did not set."""
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
