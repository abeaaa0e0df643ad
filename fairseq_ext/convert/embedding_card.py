"""The model card's section on a pooled embedding: pooling, projection, normalisation, similarity, temperature,
the tower, the retrieval figures of the last validation, and how to compute the embedding."""

from __future__ import annotations

from fairseq_ext.convert.sentence_transformers import ST_POOLING, EmbeddingInfo

POOLING_WORDS = {"mean": "mean over non-pad tokens", "max": "maximum over non-pad tokens", "first": "the first token"}
# the pooling written out for the card's transformers code: hidden (B, T, C), mask (B, T, 1)
POOLING_CODE = {"mean": "(hidden * mask).sum(1) / mask.sum(1)", "first": "hidden[:, 0]",
                "max": "hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)"}


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def retrieval_line(retrieval: dict | None) -> str:
    """``MRR 0.41, R@1 0.30, R@10 0.72 over 512 held-out pairs (update 800)``, or "not recorded"."""
    if not retrieval:
        return "not recorded (the checkpoint was saved without a validation of retrieval)"
    figures = ", ".join(f"{label} {_fmt(retrieval[key])}" for key, label in
                        (("mrr", "MRR"), ("recall@1", "R@1"), ("recall@10", "R@10")) if key in retrieval)
    pool = f" over {retrieval['pairs']} held-out pairs (every query against every key)" if "pairs" in retrieval else ""
    when = f", at update {retrieval['num_updates']}" if retrieval.get("num_updates") is not None else ""
    return f"{figures or 'no figures'}{pool}{when}"


def embedding_rows(info: EmbeddingInfo) -> str:
    """Table rows (markdown) for the card."""
    tower = (f"{info.tower} (the checkpoint has separate query and key towers)" if info.separate else
             f"{info.tower}: the checkpoint has one tower, which embedded queries and keys alike")
    pooling = f"{POOLING_WORDS[info.pooling]} (sentence-transformers pooling_mode `{ST_POOLING[info.pooling]}`)"
    dense = "none" if info.dense is None else f"linear {info.dense[0]} -> {info.dense[1]}, no bias, no activation"
    norm = (f"L2 ({info.normalize_why})" if info.normalize else
            "none (scored by cosine similarity: `model.similarity` normalises both sides)" if info.cosine else "none")
    if not info.contrastive:
        similarity = temperature = "not recorded (the checkpoint was not trained with the info_nce criterion)"
    else:
        similarity = info.similarity or "not recorded"
        temperature = "not recorded" if info.temperature is None else f"{info.temperature:.4g}"
        temperature += " (learned: exp(-logit_scale))" if info.temperature_learned else " (fixed)"
    rows = [("tower", tower), ("pooling", pooling), ("projection", dense), ("normalisation", norm),
            ("similarity", similarity), ("temperature", temperature),
            ("validation retrieval", retrieval_line(info.retrieval)),
            ("max_seq_length", f"{info.max_seq_length} tokens ({info.max_seq_from})")]
    if info.st_max_abs_diff is not None:
        rows.append(("sentence-transformers parity", f"max abs embedding difference {info.st_max_abs_diff:.2e} vs. "
                     f"fairseq `model.embed` on {info.texts_checked} held-out texts (tolerance 1e-4)"))
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def tokens_note(info: EmbeddingInfo) -> str:
    if info.tokens_agree:
        fixed = (" (export gave it a post-processor that adds them: the source tokenizer did not)"
                 if info.tokens_fixed else "")
        return (f"The tokenizer adds the special tokens fairseq added in training{fixed}, so `encode()` sees the "
                "same ids. "
                "Longer inputs are cut at their start, as fairseq cut keys (a masked span query was cut to a "
                "window around its mask in training).")
    return ("**Warning:** the tokenizer's own special tokens differ from the inputs fairseq was trained on "
            f"({info.token_example}); add them yourself for faithful embeddings.")


def embedding_section(info: EmbeddingInfo, out_dir: str, st_format: bool, hf_class: str = "T5EncoderModel") -> str:
    """The card's section: a table and usage for sentence-transformers and for plain transformers (``hf_class``:
    the model class written; a masked-LM model's encoder is its ``base_model``)."""
    pool = POOLING_CODE[info.pooling]
    encoder = ".base_model" if hf_class.endswith("ForMaskedLM") else ""
    lines = ["import torch", f"from transformers import AutoTokenizer, {hf_class}",
             f'tok = AutoTokenizer.from_pretrained("{out_dir}")',
             f'model = {hf_class}.from_pretrained("{out_dir}"){encoder}.eval()',
             f'batch = tok(texts, padding=True, truncation=True, max_length={info.max_seq_length}, '
             'return_tensors="pt")',
             "with torch.no_grad():",
             "    hidden = model(**batch).last_hidden_state  # (B, T, C)",
             "mask = batch[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)",
             f"emb = {pool}  # (B, C)"]
    if info.dense is not None:
        weights = ('"2_Dense/model.safetensors"' if st_format else '"pooler.safetensors"')
        key = '"linear.weight"' if st_format else '"dense.weight"'
        lines += ["from safetensors.torch import load_file",
                  f'emb = emb @ load_file(f"{out_dir}/" + {weights})[{key}].T  # (B, {info.dense[1]})']
    if info.normalize:
        lines.append("emb = torch.nn.functional.normalize(emb, dim=-1)")
    if info.cosine and not info.normalize:
        lines.append("# scored by cosine similarity: normalise emb (torch.nn.functional.normalize) before comparing")
    score = "cosine similarity" if info.cosine else "dot product"
    st = "" if not st_format else f"""
```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{out_dir}")
queries = model.encode(["read a file line by line"])
code = model.encode(["def lines(path):\\n    with open(path) as f:\\n        return f.read().splitlines()"])
scores = model.similarity(queries, code)  # {score}, as in training
```
"""
    plain = "\n".join(lines)
    return f"""
## Embedding ({info.tower} tower)

| | |
| --- | --- |
{embedding_rows(info)}

{tokens_note(info)}
{st}
With transformers only (the same embedding, written out; score with the {score}):

```python
{plain}
```
"""
