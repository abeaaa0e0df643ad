"""Raw text -> one sentence a line, a blank line between documents.

Pure functions (sentence splitting, filtering) plus a streaming reader that
cleans bytes: invalid UTF-8 is replaced and counted, NUL bytes removed and
counted, CRLF turned into LF, empty and binary files skipped and counted.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fairseq_ext.errors import UserError
from fairseq_ext.prep.file_walk import sorted_walk

# Words that end with a full stop without ending a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc e.g i.e cf al fig figs no nos vol vols pp ed eds"
    " inc ltd co corp dept univ approx est jan feb mar apr jun jul aug sep sept oct nov dec"
    " gen col capt lt sgt rev hon u.s u.k a.m p.m ph.d".split()
)
_BOUNDARY = re.compile(r"[.!?]+[\"')\]\u201d\u2019\u00bb]*\s+(?=[\"'(\[\u201c\u2018\u00ab]?[A-Z0-9\u00c0-\u00de])")
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences.

    >>> split_sentences("Dr. Smith went home. It rained! Did it?  Yes.")
    ['Dr. Smith went home.', 'It rained!', 'Did it?', 'Yes.']
    >>> split_sentences("See e.g. Fig. 3 of J. Doe et al. for details.")
    ['See e.g. Fig. 3 of J. Doe et al. for details.']
    """
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return []
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.start() + len(m.group().rstrip())
        word = text[start:m.start() + 1].rsplit(" ", 1)[-1].rstrip(".").lower()
        if text[m.start()] == "." and (word in ABBREVIATIONS or len(word) == 1 and word.isalpha()):
            continue
        out.append(text[start:end])
        start = m.end()
    out.append(text[start:])
    return [s for s in out if s]


@dataclass(frozen=True)
class SentenceFilter:
    """What a decent-looking sentence is; 0 disables a bound."""

    min_words: int = 3
    max_words: int = 250
    min_letter_ratio: float = 0.5
    dedupe: bool = True

    def reason(self, sentence: str) -> str | None:
        """Why ``sentence`` is dropped, or None to keep it.

        >>> SentenceFilter().reason("Too short")
        'too few words'
        >>> SentenceFilter().reason("12 34 56 78 !!")
        'too few letters'
        """
        if "\ufffd" in sentence:
            return "invalid utf-8"
        words = sentence.count(" ") + 1
        if self.min_words and words < self.min_words:
            return "too few words"
        if self.max_words and words > self.max_words:
            return "too many words"
        if self.min_letter_ratio:
            visible = len(sentence) - sentence.count(" ")
            letters = sum(ch.isalpha() for ch in sentence)
            if letters < self.min_letter_ratio * visible:
                return "too few letters"
        return None


@dataclass
class ReadStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    invalid_utf8: int = 0
    nul_bytes: int = 0
    crlf_lines: int = 0
    control_chars: int = 0
    skipped: Counter = None  # reason -> files

    def __post_init__(self):
        self.skipped = Counter() if self.skipped is None else self.skipped


def find_input_files(inputs: Sequence[str | os.PathLike], pattern: str = "*") -> list[Path]:
    """Files named, and files under directories named (sorted, hidden ones skipped)."""
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = []
            for directory, _rel, names in sorted_walk(path, lambda d, _rel: not d.name.startswith(".")):
                found += [directory / n for n in names if not n.startswith(".") and fnmatch.fnmatch(n, pattern)]
            if not found:
                raise UserError(f"{path}: directory holds no files matching {pattern!r}")
            files += found
        else:
            raise UserError(f"{path}: no such file or directory")
    return files


_NON_TEXT = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"


def looks_binary(head: bytes) -> bool:
    """Many NULs or control bytes: a binary file, skipped (a stray NUL is repaired instead)."""
    control = len(head) - len(head.translate(None, _NON_TEXT))
    return head.count(0) > max(1, len(head) // 100) or control > 0.05 * len(head)


def read_clean_lines(path: Path, stats: ReadStats) -> Iterator[str]:
    """Lines of a file as clean text; every repair is counted in ``stats``."""
    with open(path, "rb") as f:
        head = f.read(65536)
        if not head:
            stats.skipped["empty file"] += 1
            return
        if looks_binary(head):
            stats.skipped["binary file"] += 1
            return
        f.seek(0)
        stats.files += 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for raw in f:
            stats.bytes += len(raw)
            stats.lines += 1
            if b"\x00" in raw:
                stats.nul_bytes += raw.count(0)
                raw = raw.replace(b"\x00", b"")
            if raw.endswith(b"\r\n"):
                stats.crlf_lines += 1
            line = decoder.decode(raw)
            stats.invalid_utf8 += line.count("\ufffd")
            yield clean_line(line.rstrip("\r\n"), stats)
        tail = decoder.decode(b"", final=True)
        stats.invalid_utf8 += tail.count("\ufffd")


def clean_line(line: str, stats: ReadStats) -> str:
    """One decoded line (no line break) as clean NFC text: a stray CR becomes a space, control characters too."""
    line = line.replace("\r", " ")
    if _CONTROL.search(line):
        stats.control_chars += len(_CONTROL.findall(line))
        line = _CONTROL.sub(" ", line)
    return unicodedata.normalize("NFC", line)


def iter_documents(files: Iterable, doc_sep: str, stats: ReadStats) -> Iterator[list[list[str]]]:
    """Documents as lists of paragraphs, each a list of raw lines, from text files and tables (one row a document).

    ``doc_sep``: ``blank-line`` (a blank line ends a document), ``file`` (a file
    is a document; blank lines separate paragraphs), ``line`` (each line is one).
    """
    if doc_sep not in ("blank-line", "file", "line"):
        raise UserError(f"unknown document separator {doc_sep!r}")
    for path in files:
        if hasattr(path, "documents"):  # a table (fairseq_ext.prep.tables.TableText): one row a document
            yield from _row_documents(path, doc_sep, stats)
            continue
        doc: list[list[str]] = []
        para: list[str] = []
        for line in read_clean_lines(path, stats):
            if doc_sep == "line":
                if line.strip():
                    yield [[line]]
                continue
            if line.strip():
                para.append(line)
                continue
            if para:
                doc.append(para)
                para = []
            if doc_sep == "blank-line" and doc:
                yield doc
                doc = []
        if para:
            doc.append(para)
        if doc:
            yield doc


def _row_documents(table, doc_sep: str, stats: ReadStats) -> Iterator[list[list[str]]]:
    """Each row of a table as a document (blank lines inside a row separate its paragraphs, as in a file);
    with ``doc_sep`` ``line``, each of its lines is one. NUL characters are removed and counted, as in files."""
    stats.files += 1
    for _where, text in table.documents():
        stats.bytes += len(text.encode("utf-8"))
        if "\x00" in text:
            stats.nul_bytes += text.count("\x00")
            text = text.replace("\x00", "")
        lines = text.split("\n")
        stats.lines += len(lines)
        if text.endswith("\n"):
            lines.pop()
        para: list[str] = []
        doc: list[list[str]] = []
        for line in (clean_line(raw, stats) for raw in lines):
            if not line.strip():
                if para:
                    doc.append(para)
                para = []
            elif doc_sep == "line":
                yield [[line]]
            else:
                para.append(line)
        if para:
            doc.append(para)
        if doc:
            yield doc


def document_sentences(doc: list[list[str]]) -> list[str]:
    """Sentences of a document; lines of a paragraph are joined first (hard wraps)."""
    return [s for para in doc for s in split_sentences(" ".join(para))]
