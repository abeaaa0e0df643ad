"""The demos' logic: a recipe is prep -> train -> export -> show, on a built-in corpus.

:mod:`.bart` (``fairseq-ext demo``), :mod:`.code` and :mod:`.search` (``--recipe code``), with what
they share in :mod:`.common` and the end-of-run figures in :mod:`.report`. The verb itself is
:mod:`fairseq_ext.cli.demo`.
"""
