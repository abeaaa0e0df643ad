"""The only code that changes fairseq at run time.

:func:`install` applies every change, once, in the order below; nothing outside this package
assigns to a fairseq attribute (``tests/runtime/test_patch_table.py`` checks it).
"""

from __future__ import annotations


def install(training: bool = True) -> None:
    """Apply fairseq_ext's changes to fairseq (idempotent). ``training``: also the ones that only a process
    running fairseq's training loop wants (save and exit 0 on SIGUSR1/SIGTERM); the ``fairseq-ext`` verbs
    pass False."""
    from fairseq_ext.runtime import checkpoint_loading, launch, precision, torchaudio

    torchaudio.ignore_broken_torchaudio()
    checkpoint_loading.install()
    launch.install()  # torchrun/srun/spawn on CPU and CUDA; before precision, whose wrapper runs first
    precision.install()  # --bf16 means bfloat16 on CUDA/CPU, not --tpu
    if training:
        from fairseq_ext.runtime import signals

        signals.install()
