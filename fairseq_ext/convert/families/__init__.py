"""One module per model family: its name tables, what it drops on purpose, and how it fills settings.

A family is registered by one line in :data:`fairseq_ext.convert.registry.FAMILIES`; export and import
never branch on a family name outside this package.
"""
