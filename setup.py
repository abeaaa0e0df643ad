"""Packaging for fairseq_ext, a fairseq plugin for HF-tokenized pretraining."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="fairseq_ext",
    version="0.1.0",
    description=(
        "A fairseq --user-dir plugin: pretrain BART / RoBERTa / T5-encoder models "
        "with Hugging Face tokenizers and hand them to transformers."
    ),
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_ext", "fairseq_ext.*"]),
    install_requires=[
        # fairseq 0.12.2 does not import on Python >= 3.11; fairseq-fixed is the
        # maintained release that does. Both import as `fairseq`.
        "fairseq-fixed==0.12.3.1; python_version >= '3.11'",
        "fairseq==0.12.2; python_version < '3.11'",
        "torch>=1.13",
        "numpy>=1.21",
        "tokenizers>=0.15",
        "transformers>=4.38",
        "sentencepiece>=0.1.99",
        "protobuf>=3.20",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "emoji>=2.0",
        "matplotlib>=3.5",  # the demo's learning curves (curves.png)
        # fairseq-train --tensorboard-logdir writes nothing without a writer. fairseq tries
        # torch.utils.tensorboard (needs the whole `tensorboard` app: grpcio, werkzeug, ...) and
        # then tensorboardX, a small pure-Python writer (numpy, protobuf, packaging).
        "tensorboardX>=2.6",
        # the code recipe: Arrow datasets (save_to_disk / load_from_disk, memory-mapped in training),
        # .gitignore matching (GitIgnoreSpec.check_file), and the language of a source file from its
        # name (Pygments' lexer patterns)
        "datasets>=2.14",
        "pyarrow>=12",
        "pathspec>=0.12",
        "Pygments>=2.12",
        # contrastive code search: exporting to (and loading) sentence-transformers directories, and the
        # BM25 baseline of `fairseq-ext eval-retrieval` (bm25s: maintained, numpy/scipy only)
        "sentence-transformers>=3.0",
        "bm25s>=0.2",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.4"],
    },
    entry_points={"console_scripts": ["fairseq-ext = fairseq_ext.cli.main:main"]},
)
