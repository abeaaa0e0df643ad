"""The one way fairseq_ext shows progress: a tqdm bar on stderr that clears its line when done.

Long work (binarize, prepare, code-dataset, code-pairs, eval-retrieval) shows one; ``--quiet``
(``enabled=False``) hides it. Bytes (the default unit) are counted in KiB/MiB.
"""

from __future__ import annotations

from typing import Optional


def progress_bar(total: int, enabled: bool = True, unit: str = "B", desc: Optional[str] = None):
    """A tqdm bar over ``total`` ``unit``s (a context manager); ``enabled=False``: one that shows nothing.

    >>> with progress_bar(3, enabled=False, unit="file") as bar:
    ...     bar.update(3)
    """
    from tqdm import tqdm

    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False, **scale)
