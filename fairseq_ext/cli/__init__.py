"""Command-line verbs of ``fairseq-ext``; see :mod:`fairseq_ext.cli.main`."""
