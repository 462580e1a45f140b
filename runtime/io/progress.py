"""Progress bars on stderr (tqdm), or nothing when quiet: the network's slices, the bundles written."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Progress:
    """``with Progress(quiet).bar(total, unit, description) as advance: advance(n)``."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    @contextmanager
    def bar(self, total: int, unit: str, description: str | None = None) -> Iterator[Callable[[int], None]]:
        if self.quiet:
            yield lambda n: None
            return
        from tqdm import tqdm

        with tqdm(total=total, unit=unit, desc=description, file=sys.stderr, dynamic_ncols=True, leave=True) as bar:
            yield bar.update
