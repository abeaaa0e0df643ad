"""``t5_encoder``: T5's encoder as a fairseq model (:mod:`.model`), built from parts computed exactly as
transformers computes them (:mod:`.modules`)."""

from fairseq_ext.models.t5 import model  # noqa: F401  (registers the model and its --arch presets)
