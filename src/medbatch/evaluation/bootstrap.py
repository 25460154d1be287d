"""The bootstrap engine: seeded resamples drawn chunk by chunk, and percentile intervals.

Must not import the result models' consumers (`core`, `metrics`, `scores`, `comparison`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from medbatch.evaluation.models import Estimate

_FloatArray = npt.NDArray[np.float64]
_IntArray = npt.NDArray[np.int64]
_Number = TypeVar("_Number", np.float64, np.int64)
# Resample this many index values (32 MB) at a time. Each chunk is reduced to a few numbers
# per resample before the next is drawn, so the (n_bootstrap, n) index array (800 MB at
# n = 100k) never exists; the chunks draw the same stream of indices as that array would.
_BOOTSTRAP_CHUNK = 4_000_000


def _finite(value: float | np.floating[Any] | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _Resamples:
    """`n_bootstrap` resamples of `n` records, drawn in chunks from one seed.

    `map` draws the same index stream every time (a fresh generator from the same seed), so
    metrics computed in separate calls are paired on the same resamples; only one chunk of
    indices is alive at a time.
    """

    def __init__(self, n: int, n_bootstrap: int, seed: np.random.SeedSequence) -> None:
        self.n = n
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    @classmethod
    def of(cls, n: int, n_bootstrap: int, seed: np.random.SeedSequence) -> _Resamples | None:
        """The resamples, or None when there is nothing to resample."""
        return cls(n, n_bootstrap, seed) if n and n_bootstrap else None

    def chunks(self) -> Iterator[_IntArray]:
        """(rows, n) index arrays whose rows, in order, are the resamples."""
        rng = np.random.default_rng(self.seed)
        rows_per_chunk = max(1, _BOOTSTRAP_CHUNK // self.n)
        for start in range(0, self.n_bootstrap, rows_per_chunk):
            size = min(rows_per_chunk, self.n_bootstrap - start)
            yield rng.integers(0, self.n, size=(size, self.n), dtype=np.int64)

    def map(self, statistic: Callable[[_IntArray], npt.NDArray[_Number]]) -> npt.NDArray[_Number]:
        """`statistic` of each chunk (one leading row per resample), stacked over chunks."""
        return np.concatenate([statistic(chunk) for chunk in self.chunks()])


def _ratio(num: _FloatArray, den: _FloatArray) -> _FloatArray:
    """num / den, NaN where den is 0 (undefined, not 0)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: _FloatArray, axis: int) -> _FloatArray:
    """Mean over non-NaN values; NaN where all are NaN (without numpy's warning)."""
    valid = ~np.isnan(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return _ratio(total, valid.sum(axis=axis).astype(np.float64))


def _interval(samples: _FloatArray | None) -> tuple[float | None, float | None]:
    """95% percentile interval of bootstrap samples, ignoring undefined resamples."""
    if samples is None:
        return None, None
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _estimate(value: float | None, samples: _FloatArray | None, n: int) -> Estimate:
    value = _finite(value)
    if value is None:
        return Estimate(value=None, n=n)
    low, high = _interval(samples)
    return Estimate(value=value, low=low, high=high, n=n)


def _pair(interval: tuple[float | None, float | None]) -> tuple[float, float] | None:
    low, high = interval
    return (low, high) if low is not None and high is not None else None
