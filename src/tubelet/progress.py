"""Progress bars for long work, one policy for every command: shown on a terminal (stderr), with an ETA; hidden
when stderr is not a terminal (tqdm's own check) and under ``--json`` (`quiet`), whose output a program reads.

A leaf module (tqdm only), so data generation, inference, explanations and training all use the same bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tqdm import tqdm

_quiet = False


def quiet(flag: bool = True) -> None:
    """Hide every bar from now on (``--json``), or show them again."""
    global _quiet
    _quiet = flag


def each(fn: Callable, jobs: list, *, workers: int, desc: str, unit: str, chunksize: int = 1) -> None:
    """``fn(job)`` for every job, in a pool of `workers` processes (in this process when under 2), with a bar."""
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(bar(pool.map(fn, jobs, chunksize=chunksize), total=len(jobs), desc=desc, unit=unit))
        return
    for job in bar(jobs, desc=desc, unit=unit):
        fn(job)


def bar(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
    disable: bool | None = None, **options,
):  # fmt: skip
    """A tqdm bar over `iterable` (or to update by hand with `total`), hidden when quiet, when not on a terminal, or
    when `disable` (work too short to need one)."""
    hidden = True if _quiet or disable else None  # None: tqdm shows it on a terminal only
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=hidden, **options)
