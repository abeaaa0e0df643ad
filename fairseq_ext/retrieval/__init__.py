"""Code search measured: BM25 (:mod:`.bm25`), the embedding models ``eval-retrieval`` loads (:mod:`.models`)
and its evaluation on a pool of held-out pairs, plain or renamed (:mod:`.evaluate`).

The ranking metrics themselves (MRR, Recall@k, ties counted in expectation) live in
:mod:`fairseq_ext.criterions.ranking`, below the tasks, because ``code_contrastive``'s
validation computes the same figures inside ``fairseq-train``.
"""
