"""Progress bars: on a terminal only, so that logs of redirected runs (``frozen-dt eval > log``) hold no bar frames."""

from __future__ import annotations


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar over ``iterable`` (or updated by hand), shown only when ``enabled`` and stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
