"""Bad input to any verb: one line naming the file or setting, a non-zero exit, no traceback, nothing left behind.

One table, one row per mistake: the verb's argv (``{name}`` fills in a path from the ``ws``
workspace below, ``{out}`` the row's own output path) and a piece of the error line, which
must name the file or the setting. Every row checks the same things: exit status != 0; exactly
one line on stderr, ``fairseq-ext VERB: error: ...`` (or argparse's ``fairseq-ext VERB: error:
argument ...`` for a usage mistake); no traceback; no warning logged beside it; and the output's
directory holds exactly what it held before (no output, no temporary directory, an existing
output untouched). Rows run in-process through ``main(argv)``; those marked ``SUB`` also run the
installed ``fairseq-ext`` script, to prove that the real program prints the same single line.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from conftest import error_lines, run_cli
from fairseq_ext.cli.main import main, run_verb
from fairseq_ext.errors import UserError

SUB = "subprocess"


def row(*argv: str, expect: str, out: str = "{out}", marks: tuple = ()):
    """One mistake: argv, a piece of the error line, the output path it must not leave behind."""
    return pytest.param(list(argv), expect, out, SUB in marks, id=" ".join(argv)[:90])


# argv prefixes that are right as they stand; a row adds the one mistake
PREP = ("prepare", "{text}", "-o", "{out}")
TOK = ("train-tokenizer", "-i", "{text}", "-o", "{out}")
BIN = ("binarize", "--tokenizer", "{bpe}", "--train", "{text}", "-o", "{out}")
EXPORT = ("export-hf", "{ckpt}", "-o", "{out}")
IMPORT = ("import-hf", "{hf}", "-o", "{out}")
CODE = ("code-dataset", "{codedir}", "-o", "{out}", "--tokenizer", "{bpe}")
PAIRS = ("code-pairs", "{codedir}", "-o", "{out}", "--tokenizer", "{bpe}")
EVAL = ("eval-retrieval", "{cc_ckpt}", "--pairs", "{pairs}", "--json", "{out}")
NOT_DIR, NOT_EMPTY = "exists and is not a directory", "directory exists and is not empty"
CANNOT = "cannot create the output directory"
REPLACES = "the output directory would replace the input"

BIN_T = ("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--train")  # + a table
TABLE_ROWS = [
    # tables (JSON lines, Parquet, CSV, saved datasets): the file, the row, what is wrong
    row(*BIN_T, "{jsonl_nokey}", expect="{jsonl_nokey}:2: no key 'text' (keys: body)"),
    row(*BIN_T, "{jsonl_nokey}", "--text-key", "meta.text", expect="{jsonl_nokey}:1: no key 'meta.text' (keys: text)"),
    row(*BIN_T, "{jsonl_notstr}", expect="{jsonl_notstr}:2: 'text' is int, not a string"),
    row(*BIN_T, "{jsonl_malformed}",
        expect="{jsonl_malformed}:2: malformed JSON (Unterminated string starting at column 10)"),
    row(*BIN_T, "{jsonl_surrogate}", expect="{jsonl_surrogate}:1: 'text' is not valid Unicode (a byte that is not "
        "UTF-8, or a lone surrogate, at character 2)"),
    row(*BIN_T, "{jsonl_nul}", expect="{jsonl_nul}:1: 'text' holds a NUL character"),
    row(*BIN_T, "{json_array}", expect="{json_array}: a JSON array, not JSON lines; write one object a line",
        marks=(SUB,)),
    row(*BIN_T, "{zst_truncated}", expect="{zst_truncated}: zstd data truncated or corrupt after 0 rows (the file "
        "ends inside a zstd frame)"),
    row(*BIN_T, "{gz_truncated}", expect="{gz_truncated}: gzip data truncated or corrupt after"),
    row(*BIN_T, "{xz_corrupt}", expect="{xz_corrupt}: xz data truncated or corrupt after 0 rows"),
    row(*BIN_T, "{parquet_null}", expect="{parquet_null}: row 1: 'text' is null, not a string"),
    row(*BIN_T, "{parquet_nocol}", expect="{parquet_nocol}: no column 'text' for key 'text' (columns: body)"),
    row(*BIN_T, "{parquet_torn}", expect="{parquet_torn}: not a readable Parquet file"),
    row(*BIN_T, "{csv_extra}", expect="{csv_extra}:3: 3 fields, the header names 2"),
    row(*BIN_T, "{csv_empty}", expect="error: {csv_empty}: empty, no header line"),
    row(*BIN_T, "{csv_empty}", "--skip-bad-rows", expect="error: {csv_empty}: empty, no header line"),
    row(*BIN_T, "{csv_badutf8}", expect="{csv_badutf8}:3: 'text' is not valid Unicode (a byte that is not UTF-8"),
    row(*BIN_T, "{csv_unterminated}", expect="{csv_unterminated}:3: malformed CSV (unexpected end of data)"),
    row(*BIN_T, "{mixed_dir}", expect="{mixed_dir}: holds tables (a.jsonl) beside other files (README.md); a "
        "directory is read as one table when every file in it is Parquet, or every one JSON lines"),
    row("prepare", "{mixed_dir}", "-o", "{out}", expect="{mixed_dir}: holds tables (a.jsonl) beside other files"),
    row("train-tokenizer", "-i", "{mixed_dir}", "-o", "{out}", expect="{mixed_dir}: holds tables (a.jsonl)"),
    row(*BIN_T, "{text}", "--valid", "{text}", "--valid-split", "dev",
        expect="--valid-split dev: --valid {text} is not a saved DatasetDict"),
    row(*BIN_T, "{dsdict}", "--split", "dev", expect="{dsdict}: no split 'dev' (--split); it has train, test"),
    row(*BIN_T, "{dataset}", "--split", "train", expect="{dataset}: holds one Dataset, not a DatasetDict: --split"),
    row(*BIN_T, "{jsonl_nokey}", "--skip-bad-rows", "--text-key", "nope",
        expect="{jsonl_nokey}: no text to binarize, only empty rows (0 rows, 5 skipped (1 malformed JSON lines, "
        "4 rows without the key)) (--train)"),
    row(*BIN_T, "{text}", "--text-key", "", expect="--text-key '': not a key"),
    row(*BIN_T, "{text}", "--data-files", "x.jsonl", expect="--data-files and --dataset-config need --dataset NAME"),
    row(*BIN_T, "{text}", "--dataset", "json", expect="--dataset json is the training data: give it or --train"),
    row(*BIN_T, "{text}", "--test-split", "dev", expect="--test-split dev: applies to --dataset, or to a saved "
        "DatasetDict given to --test"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--data-files", "x.jsonl",
        expect="--data-files and --dataset-config need --dataset NAME"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "json", "--data-files", "{missing}/*.jsonl",
        expect="--data-files {missing}/*.jsonl: matches no file"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "json", "--data-files", "{jsonl_malformed}",
        expect="{jsonl_malformed}:2: malformed JSON (Unterminated string starting at column 10)"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "json", "--data-files", "{jsonl_notstr}",
        "--valid-split", "validation", expect="--dataset json --data-files: the files make one split, train; no "
        "split 'validation'"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "text", "--data-files", "{badutf8}",
        expect="text[train]: the datasets loader failed after 0 rows ('utf-8' codec can't decode byte 0xff"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "no-such-dataset-here",
        expect="--dataset no-such-dataset-here: cannot load it offline"),
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}", "--dataset", "json", "--data-files", "{jsonl_notstr}",
        expect="{jsonl_notstr}:2: 'text' is int, not a string"),
    row("prepare", "{dsdict}", "-o", "{out}", expect="{dsdict}: a DatasetDict with splits train, test: pick one "
        "with --split"),
    row("prepare", "{jsonl_malformed}", "-o", "{out}", expect="{jsonl_malformed}:2: malformed JSON"),
    row("train-tokenizer", "-i", "{parquet_null}", "-o", "{out}",
        expect="{parquet_null}: row 1: 'text' is null, not a string"),
    row("encode", "--tokenizer", "{bpe}", "-i", "{zst_truncated}", "-o", "{out}",
        expect="{zst_truncated}: zstd data truncated or corrupt"),
]

ROWS = TABLE_ROWS + [
    # the command itself
    row("nope", expect="fairseq-ext: error: argument VERB: invalid choice: 'nope'"),
    row("user-dir", "extra", expect="unrecognized arguments: extra"),
    # prepare
    row("prepare", "-o", "{out}", expect="nothing to prepare: give INPUT files or directories (or --dataset NAME)"),
    row("prepare", "{text}", expect="the following arguments are required: -o/--output"),
    row("prepare", "{missing}", "-o", "{out}", expect="{missing}: no such file or directory", marks=(SUB,)),
    row("prepare", "{emptydir}", "-o", "{out}", expect="{emptydir}: directory holds no files matching '*'"),
    row("prepare", "{rawdir}", "-o", "{out}", "--glob", "*.md",
        expect="{rawdir}: directory holds no files matching '*.md'"),
    row("prepare", "{empty}", "-o", "{out}", expect="{empty}: no text to read (skipped: 1 empty file)"),
    row("prepare", "{binary}", "-o", "{out}", expect="{binary}: no text to read (skipped: 1 binary file)"),
    row("prepare", "{short}", "-o", "{out}", expect="{short}: no sentence survived cleaning and filtering"),
    row(*PREP, "--valid-ratio", "1", expect="argument --valid-ratio: must be in [0, 1), got '1'"),
    row(*PREP, "--valid-ratio", "-0.1", expect="argument --valid-ratio: must be in [0, 1)"),
    row(*PREP, "--valid-ratio", "nan", expect="argument --valid-ratio: expected a finite number"),
    row(*PREP, "--valid-ratio", "ten", expect="argument --valid-ratio: expected a number, got 'ten'"),
    row(*PREP, "--test-ratio", "1.5", expect="argument --test-ratio: must be in [0, 1)"),
    row(*PREP, "--valid-ratio", "0.5", "--test-ratio", "0.5", expect="--valid-ratio + --test-ratio must be < 1"),
    row("prepare", "{onedoc}", "-o", "{out}", "--valid-ratio", "0.5",
        expect="only 1 document(s) kept: too few to split"),
    row(*PREP, "--seed", "-1", expect="argument --seed: must be an integer >= 0, got '-1'"),
    row(*PREP, "--doc-sep", "page", expect="argument --doc-sep: invalid choice: 'page'"),
    row(*PREP, "--normalize", "emails", expect="argument --normalize: invalid choice"),
    row(*PREP, "--lowercase", "maybe", expect="argument --lowercase: invalid choice"),
    row(*PREP, "--min-words", "-1", expect="argument --min-words: must be an integer >= 0"),
    row(*PREP, "--max-words", "2.5", expect="argument --max-words: expected an integer, got '2.5'"),
    row(*PREP, "--min-words", "10", "--max-words", "5", expect="--min-words 10 > --max-words 5"),
    row(*PREP, "--min-letter-ratio", "1.5", expect="argument --min-letter-ratio: must be in [0, 1]"),
    row(*PREP, "--tokenizer", "{missing}", expect="{missing}: no such tokenizer file or directory (--tokenizer)"),
    row(*PREP, "--normalize", "tweets", "--tokenizer", "{text}", expect="{text}: not a valid tokenizer.json"),
    row("prepare", "{text}", "-o", "{file}", expect="{file}: " + NOT_DIR, out="{file}"),
    row("prepare", "{text}", "-o", "{full}", expect="{full}: " + NOT_EMPTY + " (pass --overwrite", out="{full}"),
    row("prepare", "{text}", "-o", "{file}/out", expect="{file}/out: cannot create it, {file} is a file",
        out="{file}/out"),
    row("prepare", "{text}", "-o", "{unwritable}/out", expect="{unwritable}/out: " + CANNOT, out="{unwritable}/out"),
    row("prepare", "{rawdir}", "-o", "{rawdir}", "--overwrite", expect="-o {rawdir}: " + REPLACES, out="{rawdir}"),
    # train-tokenizer
    row("train-tokenizer", "-o", "{out}", expect="nothing to learn from: give -i FILE ... (or --dataset NAME)"),
    row("train-tokenizer", "-i", "{missing}", "-o", "{out}", expect="{missing}: no such file or directory"),
    row("train-tokenizer", "-i", "{empty}", "-o", "{out}",
        expect="{empty}: no text to learn from (skipped: 1 empty file)"),
    row("train-tokenizer", "-i", "{empty}", "{binary}", "{badutf8}", "-o", "{out}", expect="{empty}, {binary}, "
        "{badutf8}: no text to learn from (skipped: 1 empty file, 1 binary file, 1 undecodable file)"),
    row(*TOK, "--languages", "klingon", expect="--languages: unknown language 'klingon'"),
    row("train-tokenizer", "-i", "{blank}", "-o", "{out}", expect="{blank}: no text to learn from (only blank lines)"),
    row("train-tokenizer", "-i", "{binary}", "-o", "{out}",
        expect="{binary}: no text to learn from (skipped: 1 binary file)"),
    row("train-tokenizer", "-i", "{emptydir}", "-o", "{out}", expect="{emptydir}: directory holds no files"),
    row(*TOK, "--vocab-size", "0", expect="argument --vocab-size: must be a positive integer, got '0'", marks=(SUB,)),
    row(*TOK, "--vocab-size", "-5", expect="argument --vocab-size: must be a positive integer"),
    row(*TOK, "--vocab-size", "3k", expect="argument --vocab-size: expected an integer"),
    row(*TOK, "--vocab-size", "100", expect="--vocab-size 100 is too small for a bpe tokenizer: it needs at least 261"),
    row(*TOK, "--kind", "wordpiece", "--vocab-size", "5",
        expect="--vocab-size 5 is too small for a wordpiece tokenizer: it needs at least 6"),
    row(*TOK, "--kind", "wordpiece", "--vocab-size", "8",
        expect="--vocab-size 8 is smaller than the wordpiece tokenizer's alphabet"),
    row(*TOK, "--kind", "unigram", "--vocab-size", "6",
        expect="--vocab-size 6 is smaller than the unigram tokenizer's alphabet"),
    row(*TOK, "--kind", "sentencepiece", expect="argument --kind: invalid choice"),
    row(*TOK, "--min-frequency", "0", expect="argument --min-frequency: must be a positive integer"),
    row(*TOK, "--model-max-length", "0", expect="argument --model-max-length: must be a positive integer"),
    row("train-tokenizer", "-i", "{text}", "-o", "{file}", expect="{file}: " + NOT_DIR, out="{file}"),
    row("train-tokenizer", "-i", "{text}", "-o", "{full}", expect="{full}: " + NOT_EMPTY, out="{full}"),
    row("train-tokenizer", "-i", "{text}", "-o", "{unwritable}/out", expect="{unwritable}/out: " + CANNOT,
        out="{unwritable}/out"),
    row("train-tokenizer", "-i", "{rawdir}", "-o", "{rawdir}", "--overwrite", expect=REPLACES + " {rawdir}",
        out="{rawdir}"),
    # binarize
    row("binarize", "--tokenizer", "{bpe}", "-o", "{out}",
        expect="nothing to binarize: give --train FILE (or --dataset NAME)"),
    row("binarize", "--tokenizer", "{missing}", "--train", "{text}", "-o", "{out}",
        expect="{missing}: no such tokenizer file or directory"),
    row("binarize", "--tokenizer", "{text}", "--train", "{text}", "-o", "{out}",
        expect="{text}: not a valid tokenizer.json"),
    row("binarize", "--tokenizer", "{badjson}", "--train", "{text}", "-o", "{out}",
        expect="{badjson}: not a valid tokenizer.json"),
    row("binarize", "--tokenizer", "{emptydir}", "--train", "{text}", "-o", "{out}",
        expect="{emptydir}: directory holds no tokenizer"),
    row("binarize", "--tokenizer", "{badconfigtok}", "--train", "{text}", "-o", "{out}",
        expect="{badconfigtok}/tokenizer_config.json:1: not valid JSON (Expecting property name"),
    row("binarize", "--tokenizer", "{garbage_model}", "--train", "{text}", "-o", "{out}",
        expect="{garbage_model}: not a SentencePiece model"),
    row("binarize", "--tokenizer", "{noeos}", "--train", "{text}", "-o", "{out}",
        expect="{noeos}: tokenizer has no eos token"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{missing}", "-o", "{out}",
        expect="{missing}: no such file (--train)"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{rawdir}", "-o", "{out}",
        expect="{rawdir}: is a directory, not a text file (--train)"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{empty}", "-o", "{out}",
        expect="{empty}: file is empty (--train)"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{blank}", "-o", "{out}",
        expect="{blank}: no text to binarize, only blank lines (--train)"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{badutf8}", "-o", "{out}", expect="{badutf8}:2: invalid UTF-8"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{binary}", "-o", "{out}", expect="{binary}:2: invalid UTF-8"),
    row(*BIN, "--valid", "{missing}", expect="{missing}: no such file (--valid)"),
    row(*BIN, "--test", "{empty}", expect="{empty}: file is empty (--test)"),
    row(*BIN, "--workers", "0", expect="argument --workers: must be a positive integer, got '0'"),
    row(*BIN, "--max-line-tokens", "1",
        expect="argument --max-line-tokens: must be at least 2 (one token and eos), got '1'", marks=(SUB,)),
    row(*BIN, "--max-line-tokens", "-3", expect="argument --max-line-tokens: must be at least 2"),
    row(*BIN, "--batch-mb", "0", expect="argument --batch-mb: must be a number > 0, got '0'"),
    row(*BIN, "--batch-mb", "-1", expect="argument --batch-mb: must be a number > 0"),
    row(*BIN, "--batch-mb", "inf", expect="argument --batch-mb: expected a finite number"),
    row(*BIN, "--shards", "0", expect="argument --shards: must be a positive integer, got '0'", marks=(SUB,)),
    row(*BIN, "--shards", "-2", expect="argument --shards: must be a positive integer, got '-2'"),
    row(*BIN, "--shards", "two", expect="argument --shards: expected an integer, got 'two'"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{onedoc}", "-o", "{out}", "--shards", "2",
        expect="--shards 2: more shards than documents in {onedoc} (1; blank lines separate documents)"),
    row(*BIN, "--num-shards", "3", "--shard-index", "3", expect="--shard-index 3: must be from 0 to 2 (--num-shards 3)",
        marks=(SUB,)),
    row(*BIN, "--num-shards", "0", "--shard-index", "0", expect="argument --num-shards: must be a positive integer"),
    row(*BIN, "--num-shards", "3", expect="--num-shards N and --shard-index K go together"),
    row(*BIN, "--shards", "2", "--num-shards", "2", "--shard-index", "0",
        expect="--shards 2 writes every shard in one run, --num-shards 2 --shard-index 0 one of them"),
    row(*BIN[:-1], "{file}", expect="{file}: " + NOT_DIR, out="{file}"),
    row(*BIN[:-1], "{full}", expect="{full}: " + NOT_EMPTY, out="{full}"),
    row(*BIN[:-1], "{unwritable}/out", expect="{unwritable}/out: " + CANNOT, out="{unwritable}/out"),
    row("binarize", "--tokenizer", "{bpe}", "--train", "{rawdir}/a.txt", "-o", "{rawdir}", "--overwrite",
        expect="-o {rawdir}: " + REPLACES + " {rawdir}/a.txt", out="{rawdir}"),
    # code-dataset
    row("code-dataset", "{codedir}", "-o", "{out}", expect="the following arguments are required: --tokenizer"),
    row("code-dataset", "{missing}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="{missing}: no such directory; SRC is a directory of source files", marks=(SUB,)),
    row("code-dataset", "{text}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="{text}: is a file; SRC is a directory of source files"),
    row("code-dataset", "{codedir}", "{rawdir}", "{rawdir}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="{rawdir} and {rawdir}: two SRC directories named 'raw'"),
    row("code-dataset", "{emptydir}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="{emptydir}: no source file to read (skipped: nothing)"),
    row("code-dataset", "{rawdir}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="only 1 unit(s) (projects) to split into train and valid"),
    row(*CODE, "--valid-ratio", "0.3", "--test-ratio", "0.3", expect="only 2 unit(s) (projects) to split into "
        "train and valid and test"),
    row(*CODE, "--valid-ratio", "1", expect="argument --valid-ratio: must be in [0, 1), got '1'"),
    row(*CODE, "--valid-ratio", "0.6", "--test-ratio", "0.6", expect="--valid-ratio + --test-ratio must be < 1"),
    row(*CODE, "--languages", "python,klingon", expect="--languages: unknown language 'klingon'"),
    row(*CODE, "--languages", ",", expect="--languages: no language given"),
    row(*CODE, "--split-by", "line", expect="argument --split-by: invalid choice: 'line'"),
    row(*CODE, "--split-depth", "0", expect="argument --split-depth: must be a positive integer, got '0'"),
    row(*CODE, "--max-bytes", "0", expect="argument --max-bytes: must be a positive integer"),
    row(*CODE, "--seed", "-1", expect="argument --seed: must be an integer >= 0"),
    row(*CODE, "--format", "parquet", expect="argument --format: invalid choice: 'parquet'"),
    row(*CODE, "--workers", "0", expect="argument --workers: must be a positive integer"),
    row(*CODE, "--batch-mb", "0", expect="argument --batch-mb: must be a number > 0, got '0'"),
    row(*CODE, "--num-shards", "0", expect="argument --num-shards: must be a positive integer, got '0'"),
    row(*CODE, "--num-shards", "2", "--shard-index", "2", expect="--shard-index 2: must be in 0..1 (--num-shards 2)"),
    row(*CODE, "--content-key", "a..b", expect="argument --content-key: not a key (a name, or names joined by dots)"),
    row("code-dataset", "{codedir}", "-o", "{out}", "--tokenizer", "{missing}",
        expect="{missing}: no such tokenizer file or directory"),
    row("code-dataset", "{codedir}", "-o", "{out}", "--tokenizer", "{noeos}", expect="{noeos}: tokenizer has no eos"),
    row(*CODE[:3], "{file}", *CODE[4:], expect="{file}: " + NOT_DIR, out="{file}"),
    row(*CODE[:3], "{full}", *CODE[4:], expect="{full}: " + NOT_EMPTY, out="{full}"),
    row(*CODE[:3], "{unwritable}/out", *CODE[4:], expect="{unwritable}/out: " + CANNOT, out="{unwritable}/out"),
    row("code-dataset", "{codedir}", "-o", "{codedir}", "--tokenizer", "{bpe}", "--overwrite",
        expect="-o {codedir}: " + REPLACES, out="{codedir}"),
    # code-pairs (the options it shares with code-dataset are parsed by the same code)
    row("code-pairs", "{codedir}", "-o", "{out}", expect="the following arguments are required: --tokenizer"),
    row("code-pairs", "{missing}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="{missing}: no such directory; SRC is a directory of source files", marks=(SUB,)),
    row(*PAIRS, expect="the train split has no pair: its 1 file(s) gave none"),
    row(*PAIRS, "--kind", "docstring", expect="the train split has no pair"),
    row(*PAIRS, "--kind", "tests", expect="argument --kind: invalid choice: 'tests'"),
    row(*PAIRS, "--span-lines", "5,2", expect="argument --span-lines: expected MIN,MAX with 1 <= MIN <= MAX "
        "lines, got '5,2'"),
    row(*PAIRS, "--span-lines", "0,3", expect="argument --span-lines: expected MIN,MAX"),
    row(*PAIRS, "--span-lines", "a,b", expect="argument --span-lines: expected MIN,MAX"),
    row(*PAIRS, "--span-lines", "1,2,3", expect="argument --span-lines: expected MIN,MAX"),
    row(*PAIRS, "--spans-per-file", "0", expect="argument --spans-per-file: must be a positive integer, got '0'"),
    row(*PAIRS, "--max-key-tokens", "0", expect="argument --max-key-tokens: must be a positive integer"),
    row(*PAIRS, "--min-query-words", "-1", expect="argument --min-query-words: must be an integer >= 0"),
    row(*PAIRS, "--valid-ratio", "0.6", "--test-ratio", "0.6", expect="--valid-ratio + --test-ratio must be < 1"),
    row(*PAIRS, "--mask-token", "<nope>", expect="--mask-token '<nope>': no such token in {bpe}"),
    row(*PAIRS[:-1], "{nomask}", expect="{nomask}: tokenizer has no mask token and no <extra_id_0>; name one of "
        "its tokens with --mask-token TOKEN"),
    row("code-pairs", "{codedir}", "-o", "{out}", "--tokenizer", "{noeos}", expect="{noeos}: tokenizer has no eos"),
    row(*PAIRS[:3], "{full}", *PAIRS[4:], expect="{full}: " + NOT_EMPTY, out="{full}"),
    row("code-pairs", "{codedir}", "-o", "{codedir}", "--tokenizer", "{bpe}", "--overwrite",
        expect="-o {codedir}: " + REPLACES, out="{codedir}"),
    # export-hf
    row("export-hf", "-o", "{out}", expect="the following arguments are required: CHECKPOINT"),
    row("export-hf", "{missing}", "-o", "{out}", expect="{missing}: no such checkpoint file"),
    row("export-hf", "{ckptdir}", "-o", "{out}", expect="{ckptdir}: is a directory, not a checkpoint file"),
    row("export-hf", "{hf}", "-o", "{out}", expect="{hf}: is a directory, not a checkpoint file (it looks like a "
        "transformers model: import-hf converts those to fairseq)"),
    row("export-hf", "{hf}/model.safetensors", "-o", "{out}", expect="model.safetensors: not a fairseq checkpoint"),
    row("export-hf", "{text}", "-o", "{out}", expect="{text}: not a fairseq checkpoint (not a file torch.save writes)",
        marks=(SUB,)),
    row("export-hf", "{empty}", "-o", "{out}", expect="{empty}: not a fairseq checkpoint (the file is empty)"),
    row("export-hf", "{tensor_pt}", "-o", "{out}", expect="{tensor_pt}: not a fairseq checkpoint (no 'model' weights)"),
    row("export-hf", "{truncated_pt}", "-o", "{out}", expect="{truncated_pt}: damaged or incomplete checkpoint"),
    row("export-hf", "{evil_pt}", "-o", "{out}", expect="{evil_pt}: refused to load checkpoint: it references posix"),
    row(*EXPORT, "--tokenizer", "{bpe}", expect="checkpoint {ckpt} was made with a tokenizer of 151 tokens"),
    row(*EXPORT, "--tokenizer", "{missing}", expect="{missing}: no such tokenizer file"),
    row(*EXPORT, "--tokenizer", "{text}", expect="{text}: not a valid tokenizer.json"),
    row("export-hf", "{moved_ckpt}", "-o", "{out}", expect="no tokenizer.json in the data directory"),
    row(*EXPORT, "--family", "gpt2", expect="argument --family: invalid choice: 'gpt2'"),
    row("export-hf", "{roberta_ckpt}", "-o", "{out}", "--tower", "key", expect="{roberta_ckpt}: --tower key: a "
        "roberta checkpoint has no query/key towers (contrastive t5_encoder and hf_bert checkpoints have)"),
    row("export-hf", "{roberta_ckpt}", "-o", "{out}", "--format", "sentence-transformers", expect="{roberta_ckpt}: "
        "--format sentence-transformers: a roberta checkpoint has no pooled embedding"),
    row(*EXPORT, "--tower", "side", expect="argument --tower: invalid choice: 'side'"),
    row(*EXPORT, "--format", "onnx", expect="argument --format: invalid choice: 'onnx'"),
    row(*EXPORT[:-1], "{file}", expect="{file}: " + NOT_DIR, out="{file}"),
    row(*EXPORT[:-1], "{full}", expect="{full}: " + NOT_EMPTY, out="{full}"),
    row(*EXPORT[:-1], "{unwritable}/out", expect="{unwritable}/out: " + CANNOT, out="{unwritable}/out"),
    row(*EXPORT[:-1], "{ckptdir}", "--overwrite", expect="-o {ckptdir}: " + REPLACES, out="{ckptdir}"),
    # eval-retrieval
    row("eval-retrieval", "--pairs", "{pairs}", expect="the following arguments are required: MODEL"),
    row("eval-retrieval", "{missing}", "--pairs", "{pairs}", "--json", "{out}",
        expect="{missing}: no such checkpoint file", marks=(SUB,)),
    row("eval-retrieval", "{text}", "--pairs", "{pairs}", "--json", "{out}",
        expect="{text}: not a fairseq checkpoint (not a file torch.save writes)"),
    row("eval-retrieval", "{ckpt}", "--pairs", "{pairs}", "--json", "{out}",
        expect="{ckpt}: not a checkpoint for --task code_contrastive (its model is hf_bert, its task hf_masked_lm)"),
    row("eval-retrieval", "{t5_ckpt}", "--pairs", "{pairs}", "--json", "{out}",
        expect="{t5_ckpt}: not a checkpoint for --task code_contrastive (its model is t5_encoder, its task code_mlm)"),
    row("eval-retrieval", "{hf}", "--pairs", "{pairs}", "--json", "{out}",
        expect="{hf}: a transformers model without modules.json; eval-retrieval reads a fairseq checkpoint or a "
        "sentence-transformers directory (`fairseq-ext import-hf DIR -o OUT --pooling first|mean|max` makes"),
    row("eval-retrieval", "{st}", "--pairs", "{pairs}", "--json", "{out}",
        expect="model directory {st} was made with a tokenizer of"),
    row("eval-retrieval", "{st_ckpt}", "--pairs", "{pairs}", "--json", "{out}",
        expect="checkpoint {st_ckpt} was made with a tokenizer of"),
    row("eval-retrieval", "{cc_other}", "--pairs", "{pairs}", "--json", "{out}",
        expect="checkpoint {cc_other} was made with a tokenizer of"),
    row("eval-retrieval", "{cc_ckpt}", "--pairs", "{missing}", "--json", "{out}",
        expect="--pairs {missing}: no such directory"),
    row("eval-retrieval", "{cc_ckpt}", "--pairs", "{codedir}", "--json", "{out}",
        expect="--pairs {codedir}: not a pairs directory (no code_pairs.json or dataset_dict.json"),
    row(*EVAL, "--split", "test", expect="{pairs}: no 'test' split (it has: train, valid)"),
    row(*EVAL, "--limit", "0", expect="argument --limit: must be a positive integer, got '0'"),
    row(*EVAL, "--kinds", "docs", expect="argument --kinds: expected a comma-separated list of docstring, span, "
        "got 'docs'"),
    row(*EVAL, "--max-key-tokens", "2", expect="argument --max-key-tokens: must be at least 3 (bos, a token, eos)"),
    row(*EVAL, "--batch-size", "0", expect="argument --batch-size: must be a positive integer"),
    row(*EVAL, "--device", "nosuch", expect="--device nosuch: not usable here"),
    row("eval-retrieval", "{cc_ckpt}", "--pairs", "{pairs}", "--json", "{emptydir}",
        expect="--json {emptydir}: is a directory", out="{emptydir}"),
    row("eval-retrieval", "{cc_ckpt}", "--pairs", "{pairs}", "--json", "{missing}/e.json",
        expect="--json {missing}/e.json: no such directory", out="{missing}/e.json"),
    # import-hf
    row("import-hf", "-o", "{out}", expect="the following arguments are required: HF_DIR"),
    row("import-hf", "{missing}", "-o", "{out}", expect="{missing}: no such directory"),
    row("import-hf", "{text}", "-o", "{out}", expect="{text}: is a file; HF_DIR is a transformers model directory"),
    row("import-hf", "{bpe}", "-o", "{out}", expect="{bpe}: not a transformers model directory"),
    row("import-hf", "{hf_badconfig}", "-o", "{out}", expect="{hf_badconfig}: not a transformers model directory"),
    row("import-hf", "{hf_notype}", "-o", "{out}", expect="{hf_notype}: not a transformers model directory"),
    row("import-hf", "{hf_noweights}", "-o", "{out}", expect="{hf_noweights}: cannot read the model weights",
        marks=(SUB,)),
    row("import-hf", "{hf_badweights}", "-o", "{out}", expect="{hf_badweights}: cannot read the model weights"),
    row("import-hf", "{hf_notok}", "-o", "{out}", expect="{hf_notok}: directory holds no tokenizer"),
    row("import-hf", "{ckptdir}", "-o", "{out}", expect="{ckptdir}: not a transformers model directory"),
    row(*IMPORT, "--pad-vocab-to-multiple", "0", expect="argument --pad-vocab-to-multiple: must be a positive integer"),
    row(*IMPORT, "--seed", "x", expect="argument --seed: invalid int value: 'x'"),
    row(*IMPORT[:-1], "{full}", expect="{full}: " + NOT_EMPTY, out="{full}"),
    row(*IMPORT[:-1], "{hf}", "--overwrite", expect="-o {hf}: " + REPLACES, out="{hf}"),
    row("import-hf", "{st_badmodule}", "-o", "{out}", expect="{st_badmodule}/modules.json: module "
        "'sentence_transformers.models.LayerNorm' cannot be converted; import-hf converts Transformer, Pooling, "
        "Dense, Normalize"),
    row("import-hf", "{st_badpool}", "-o", "{out}", expect="{st_badpool}/1_Pooling/config.json: pooling mode "
        "weightedmean is not supported; import-hf converts cls, mean, max"),
    row("import-hf", "{st_twopool}", "-o", "{out}", expect="{st_twopool}/1_Pooling/config.json: pooling mode "
        "cls + mean is not supported"),
    row("import-hf", "{st_densebias}", "-o", "{out}", expect="{st_densebias}/2_Dense/config.json: a Dense with a "
        "bias cannot be converted"),
    row("import-hf", "{st_densetanh}", "-o", "{out}", expect="{st_densetanh}/2_Dense/config.json: a Dense with "
        "activation torch.nn.modules.activation.Tanh cannot be converted"),
    row("import-hf", "{st_order}", "-o", "{out}", expect="{st_order}/modules.json: modules Transformer -> Dense -> "
        "Pooling -> Normalize; import-hf converts Transformer -> Pooling [-> Dense] [-> Normalize]"),
    row("import-hf", "{st_prompt}", "-o", "{out}", expect="{st_prompt}/config_sentence_transformers.json: prompts "
        "'query' (default_prompt_name 'query') are prepended to texts by sentence-transformers; fairseq_ext's pairs "
        "carry no prompts"),
    row("import-hf", "{st_lower}", "-o", "{out}", expect="{st_lower}/sentence_bert_config.json: do_lower_case=true "
        "changes the texts before or while they are tokenised"),
    row("import-hf", "{st}", "-o", "{out}", "--pooling", "mean", expect="{st}: --pooling mean: a sentence-transformers "
        "directory pools as its modules.json says; leave --pooling out"),
    row(*IMPORT, "--pooling", "cls", expect="argument --pooling: invalid choice: 'cls'"),
    row("import-hf", "{hf_t5_silu}", "-o", "{out}", expect="{hf_t5_silu}: feed_forward_proj='gated-silu': t5_encoder "
        "supports relu and gated-gelu"),
    row("export-hf", "{t5_ckpt}", "-o", "{out}", "--family", "bert", expect="a T5 encoder checkpoint exports as t5, "
        "not 'bert'"),
    row("export-hf", "{t5_ckpt}", "-o", "{out}", "--tokenizer", "{bpe}",
        expect="checkpoint {t5_ckpt} was made with a tokenizer of 100 tokens (<pad>=0 </s>=1 <unk>=2 "
        "<mask>=3;"),
    # demo
    row("demo", "-o", "{out}", "--corpus-mb", "0", expect="argument --corpus-mb: must be a number > 0"),
    row("demo", "-o", "{out}", "--vocab-size", "100", expect="argument --vocab-size: must be at least 261"),
    row("demo", "-o", "{out}", "--max-update", "0", expect="argument --max-update: must be a positive integer"),
    row("demo", "-o", "{full}", expect="{full}: " + NOT_EMPTY, out="{full}"),
    row("demo", "-o", "{out}", "--query", "json",
        expect="--query and --contrastive-updates are options of --recipe code"),
    row("demo", "--recipe", "code", "-o", "{out}", "--query", " ", expect="--query: empty text"),
    row("demo", "--recipe", "code", "-o", "{out}", "--contrastive-updates", "0",
        expect="argument --contrastive-updates: must be a positive integer"),
    row("demo", "-o", "{file}", expect="{file}: " + NOT_DIR, out="{file}"),
]


# -- the workspace every row draws its paths from -------------------------------------------------------------------

def unwritable_dir(tmp: Path) -> Path:
    """A directory no one may create anything in: a read-only one, or (for root) sysfs."""
    candidates = [tmp / "read-only"]
    candidates[0].mkdir()
    candidates[0].chmod(0o555)
    candidates.append(Path("/sys"))
    for path in candidates:
        try:
            shutil.rmtree(tempfile.mkdtemp(dir=path))
        except OSError:
            return path
    raise AssertionError("no unwritable directory on this machine to test with")


def tiny_bert_dir(bert_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def ws(tmp_path_factory, text_file, bpe_dir, bert_dir, spm_model) -> dict:
    from fairseq_ext.convert.import_hf import import_hf

    root = tmp_path_factory.mktemp("ws")
    p = {"text": text_file, "bpe": bpe_dir, "missing": root / "no-such-thing", "unwritable": unwritable_dir(root)}

    def write(name: str, data: bytes | str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    p["empty"] = write("empty.txt", b"")
    p["blank"] = write("blank.txt", "\n\n  \n")
    p["short"] = write("short.txt", "a b\n\nc d\n")
    p["onedoc"] = write("onedoc.txt", "The only document has one sentence in it.\n")
    p["binary"] = write("binary.gz", bytes(range(256)) * 8)
    p["badutf8"] = write("bad-utf8.txt", b"a good line\nbad \xff\xfe line\n")
    p["file"] = write("a-file", "keep me\n")
    p["full"] = write("full/keep.txt", "keep me\n").parent
    p["rawdir"] = write("raw/a.txt", "\n".join(text_file.read_text().splitlines()[:40]) + "\n").parent
    p["codedir"] = write("code/pkg_a/a.py", "A = 1\n").parent.parent
    write("code/pkg_b/b.py", "B = 2\n")
    p["emptydir"] = root / "empty-dir"
    p["emptydir"].mkdir()
    p["badjson"] = write("bad/tokenizer.json", "{not json")
    p["garbage_model"] = write("garbage.model", b"not a sentencepiece model")
    p["badconfigtok"] = root / "bad-config-tok"
    shutil.copytree(bpe_dir, p["badconfigtok"])
    (p["badconfigtok"] / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    p["noeos"] = write("noeos.json", json.dumps({  # a tokenizers WordLevel model with no special tokens
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "c": 2}, "unk_token": "c"}}))
    p["nomask"] = write("nomask.json", json.dumps({  # eos, but neither a mask nor <extra_id_0>
        "version": "1.0", "truncation": None, "padding": None, "normalizer": None, "post_processor": None,
        "added_tokens": [{"id": 1, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "pre_tokenizer": {"type": "Whitespace"}, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"a": 0, "</s>": 1, "c": 2}, "unk_token": "c"}}))
    torch.save(torch.zeros(3), root / "tensor.pt")
    p["tensor_pt"] = root / "tensor.pt"
    p["truncated_pt"] = write("truncated.pt", (root / "tensor.pt").read_bytes()[:300])
    torch.save({"model": {}, "x": _Evil()}, root / "evil.pt")
    p["evil_pt"] = root / "evil.pt"

    p.update(bad_tables(root, write))
    p["hf"] = tiny_bert_dir(bert_dir, root / "hf")
    for name, spoil in [("badconfig", lambda d: (d / "config.json").write_text("{not json")),
                        ("notype", lambda d: (d / "config.json").write_text('{"hidden_size": 16}')),
                        ("noweights", lambda d: (d / "model.safetensors").unlink()),
                        ("badweights", lambda d: (d / "model.safetensors").write_bytes(b"\x10" * 40)),
                        ("notok", lambda d: [f.unlink() for f in d.iterdir() if "tok" in f.name or "vocab" in f.name])]:
        d = root / f"hf-{name}"
        shutil.copytree(p["hf"], d)
        spoil(d)
        p[f"hf_{name}"] = d
    import_hf(p["hf"], root / "ckpt")
    p["ckptdir"], p["ckpt"] = root / "ckpt", root / "ckpt" / "checkpoint.pt"
    import_hf(p["hf"], root / "gone")  # its data directory (and the tokenizer.json in it) then disappears
    (root / "moved").mkdir()
    shutil.move(root / "gone" / "checkpoint.pt", root / "moved" / "checkpoint.pt")
    shutil.rmtree(root / "gone")
    p["moved_ckpt"] = root / "moved" / "checkpoint.pt"
    from transformers import T5EncoderModel

    from support.hf_models import t5_dir

    import_hf(t5_dir(root / "hf-t5", spm_model, "relu", T5EncoderModel), root / "t5-ckpt")
    p["t5_ckpt"] = root / "t5-ckpt" / "checkpoint.pt"
    p["hf_t5_silu"] = t5_dir(root / "hf-t5-silu", spm_model, "gated-silu", T5EncoderModel)
    p.update(sentence_transformers_dirs(root, bert_dir, bpe_dir))
    from support.pairs import small_pairs, untrained_checkpoint

    p["pairs"] = small_pairs(root / "pairs", bpe_dir)
    p["cc_ckpt"] = untrained_checkpoint(root / "cc.pt", p["pairs"] / "tokenizer.json", p["pairs"])
    p["cc_other"] = untrained_checkpoint(root / "cc-other.pt", bert_dir, p["pairs"])  # another tokenizer
    return {k: str(v) for k, v in p.items()}


def sentence_transformers_dirs(root: Path, bert_dir, bpe_dir) -> dict:
    """A BERT sentence-transformers directory, copies of it with one thing import-hf cannot convert each, its
    import, and a fairseq ``roberta`` checkpoint (no towers, no pooled embedding)."""
    from fairseq_ext.convert.import_hf import import_hf
    from support.st_models import bert_st_dir, roberta_encoder_dir

    p = {"st": bert_st_dir(root / "st", bert_dir, dense=8, normalize=True)}

    def edit(file: str, change):
        def spoil(d: Path) -> None:
            (d / file).write_text(json.dumps(change(json.loads((d / file).read_text()))), encoding="utf-8")
        return spoil

    spoils = {
        "badmodule": edit("modules.json", lambda m: [*m, {"idx": 4, "name": "4", "path": "4_LayerNorm",
                                                          "type": "sentence_transformers.models.LayerNorm"}]),
        "order": edit("modules.json", lambda m: [m[0], m[2], m[1], m[3]]),
        "badpool": edit("1_Pooling/config.json", lambda c: {**c, "pooling_mode": "weightedmean"}),
        "twopool": edit("1_Pooling/config.json", lambda c: {"embedding_dimension": 32, "pooling_mode_cls_token": True,
                                                           "pooling_mode_mean_tokens": True}),
        "densebias": edit("2_Dense/config.json", lambda c: {**c, "bias": True}),
        "prompt": edit("config_sentence_transformers.json", lambda c: {**c, "default_prompt_name": "query",
                                                                        "prompts": {"query": "Find: ", "doc": ""}}),
        "lower": edit("sentence_bert_config.json", lambda c: {**c, "do_lower_case": True}),
        "densetanh": edit("2_Dense/config.json", lambda c: {**c, "activation_function":
                                                            "torch.nn.modules.activation.Tanh"}),
    }
    for name, spoil in spoils.items():
        shutil.copytree(p["st"], root / f"st-{name}")
        spoil(root / f"st-{name}")
        p[f"st_{name}"] = root / f"st-{name}"
    import_hf(p["st"], root / "st-ckpt")
    p["st_ckpt"] = root / "st-ckpt" / "checkpoint.pt"
    import_hf(roberta_encoder_dir(root / "hf-roberta", bpe_dir, zero_types=True), root / "roberta-ckpt")
    p["roberta_ckpt"] = root / "roberta-ckpt" / "checkpoint.pt"
    return p


def bad_tables(root: Path, write) -> dict:
    """Tables with one mistake each, and two good saved datasets (for --split mistakes)."""
    import gzip
    import lzma

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    good = "".join(json.dumps({"text": f"Row number {i} holds a sentence."}) + "\n" for i in range(200)).encode()
    p = {
        "jsonl_nokey": write("t/nokey.jsonl", '{"text": "fine"}\n{"body": "no text key"}\n{"body": "again"}\n'
                             '[1, 2]\n{"text": broken\n'),
        "jsonl_notstr": write("t/notstr.jsonl", '{"text": "fine"}\n{"text": 5}\n'),
        "jsonl_malformed": write("t/malformed.jsonl", '{"text": "fine"}\n{"text": "cut off\n'),
        "jsonl_surrogate": write("t/surrogate.jsonl", '{"text": "a \\ud800 b"}\n'),
        "jsonl_nul": write("t/nul.jsonl", '{"text": "a \\u0000 b"}\n'),
        "json_array": write("t/array.json", '[{"text": "a"}]\n'),
        "zst_truncated": write("t/cut.jsonl.zst", zstandard.ZstdCompressor().compress(good)[:-9]),
        "gz_truncated": write("t/cut.jsonl.gz", gzip.compress(good)[:-30]),
        "xz_corrupt": write("t/corrupt.jsonl.xz", lzma.compress(good)[:12] + b"\0" * 64),
        "csv_extra": write("t/extra.csv", 'id,text\n1,"fine text"\n2,"x",surplus\n'),
        "csv_empty": write("t/empty.csv", ""),
        "csv_badutf8": write("t/bad-utf8.csv", b'text\n"Good."\n"Bad \xff."\n"Good again."\n'),
        "csv_unterminated": write("t/unterminated.csv", 'text\n"fine"\n"no closing quote\n'),
        "mixed_dir": write("t/mixed/a.jsonl", '{"text": "a row"}\n').parent,
    }
    pq.write_table(pa.table({"text": ["a b", None]}), root / "t/null.parquet")
    pq.write_table(pa.table({"body": ["a b"]}), root / "t/nocol.parquet")
    p["parquet_null"], p["parquet_nocol"] = root / "t/null.parquet", root / "t/nocol.parquet"
    p["parquet_torn"] = write("t/torn.parquet", (root / "t/null.parquet").read_bytes()[:-20])
    (p["mixed_dir"] / "README.md").write_text("# notes about the data\n", encoding="utf-8")
    rows = datasets.Dataset.from_dict({"text": ["One row.", "Another row."]})
    datasets.DatasetDict({"train": rows, "test": rows}).save_to_disk(str(root / "t/dsdict"))
    rows.save_to_disk(str(root / "t/dataset"))
    p["dsdict"], p["dataset"] = root / "t/dsdict", root / "t/dataset"
    return p


def snapshot(path: Path) -> dict:
    """Names, kinds and contents under ``path``: what a failed run must leave as it was."""
    if not path.exists():
        return {}
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for sub in sorted(path.rglob("*")) if path != Path("/sys") else sorted(path.iterdir()):
        rel = str(sub.relative_to(path))
        out[rel] = hashlib.sha256(sub.read_bytes()).hexdigest() if sub.is_file() and path != Path("/sys") else "dir"
    return out


# Python shows none of these to a user by default.
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def visible(stderr: str) -> str:
    """stderr as a terminal shows it: a progress bar redrawn with carriage returns leaves its last state only."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in stderr.split("\n"))


def around(out: Path) -> Path:
    """The nearest existing directory at or above the output's parent: where temporary names would appear."""
    return next(p for p in [out.parent, *out.parent.parents] if p.is_dir())


@pytest.mark.parametrize("argv, expect, out, also_subprocess", ROWS)
def test_bad_input_is_one_line_and_leaves_nothing(argv, expect, out, also_subprocess, ws, tmp_path, capsys, caplog):
    paths = dict(ws, out=str(tmp_path / "work" / "out"))
    (tmp_path / "work").mkdir()
    argv = [a.format_map(paths) for a in argv]
    expect = expect.format_map(paths)
    out = Path(out.format_map(paths))
    prefix = "fairseq-ext: error: " if argv[0] == "nope" else f"fairseq-ext {argv[0]}: error: "
    watched = [around(out), out] if out.exists() else [around(out)]
    before = [snapshot(p) for p in watched]

    runs = []
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    err = capsys.readouterr().err
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)]
    runs.append((code, err, shown + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]))
    if also_subprocess:
        proc = run_cli(*argv, check=False)
        runs.append((proc.returncode, proc.stderr, []))
    for code, err, warnings_shown in runs:
        assert code not in (0, None), err
        assert "Traceback" not in err, err
        lines = error_lines(visible(err))
        assert len(lines) == 1, err
        assert lines[0].startswith(prefix) and expect in lines[0], lines[0]
        assert warnings_shown == [], warnings_shown
        assert [snapshot(p) for p in watched] == before, f"{watched} changed"


# -- what run_verb does with an exception: user mistakes become one line, bugs keep their traceback -------------------

def _verb_raising(exc: BaseException):
    def run(_args):
        raise exc

    return argparse.Namespace(_run=run, _verb="binarize")


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "data-bin/.tmp/train.bin"),
     "fairseq-ext binarize: error: data-bin/.tmp/train.bin: no space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "corpus.txt"),
     "fairseq-ext binarize: error: corpus.txt: permission denied"),
    (UserError("corpus.txt:3: first line\n  second line"),
     "fairseq-ext binarize: error: corpus.txt:3: first line second line"),
])
def test_user_mistakes_from_the_machine_are_one_line(exc, line, capsys):
    assert run_verb(_verb_raising(exc)) == 1
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize("exc", [KeyError("model"), OSError("a library's own failure, no errno"),
                                 OSError(errno.EIO, "Input/output error", "x")])
def test_bugs_are_not_dressed_up_as_user_errors(exc, capsys):
    with pytest.raises(type(exc)):
        run_verb(_verb_raising(exc))
    assert capsys.readouterr().err == ""


def test_ctrl_c_says_nothing_was_left(capsys):
    assert run_verb(_verb_raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "fairseq-ext binarize: interrupted; no output was left behind\n"
