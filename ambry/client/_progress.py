"""Progress bars for uploads and downloads (tqdm), or nothing.

Owns the one rule of when a bar is shown: when the caller asks (``progress=True``), never
when it says ``False``, and by default (``None``) only when stderr is a terminal (tqdm's own
``disable=None`` rule), so scripts and CI logs stay clean.
"""

from __future__ import annotations

from typing import Protocol

from tqdm.auto import tqdm

__all__ = ["Progress", "progress_bar"]


class Progress(Protocol):
    def update(self, n: float | None = 1) -> bool | None: ...

    def close(self) -> None: ...


def progress_bar(enabled: bool | None, total: int | None, desc: str) -> Progress:
    """A byte-counting bar; ``update(n)`` after every ``n`` bytes sent or received."""
    bar: Progress = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         disable=None if enabled is None else not enabled, leave=False,
                         dynamic_ncols=True)
    return bar
