"""Progress bars of the long one-off commands: a rate and an ETA on a terminal, nothing elsewhere.

    from recipes.common.progress_bar import progress_bar
    with progress_bar(total=len(files), desc="writing imagenet-vqa.parquet", unit="image") as bar:
        bar.update(len(batch))
    for location, row in progress_bar(rows, desc="adapting test.jsonl", unit="row", total=count_rows):
        ...

A thin wrapper over tqdm with ``disable=None``: the bar shows when its stream (stderr) is a
terminal and stays quiet in CI, ``ray job submit`` logs, Ray workers and tests, so captured
output holds only the command's own lines. ``total`` may be a function, called only when the
bar shows (for a count that costs a pass over the input). ``bar.disable`` says whether it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | Callable[[], int | None] | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    **settings: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand) that shows only on a terminal (and if ``enabled``)."""
    counted = callable(total)
    bar = tqdm(
        iterable,
        total=None if counted else total,
        desc=desc,
        unit=unit,
        disable=None if enabled else True,
        dynamic_ncols=True,
        **settings,
    )
    if counted and not bar.disable:
        bar.total = total()
        bar.refresh()
    return bar
