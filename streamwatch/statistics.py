"""Two-sample statistics on count tables: the reference's against a live window's.

Everything here is a pure function of count arrays, vectorised over signals (rows). A row
with no values on either side gives NaN, which callers must never export.

Numeric signals are binned on the reference's quantile edges; the last column of a numeric
table counts missing values and is left out of the distribution statistics.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Proportions are floored at this value before the logarithm in PSI, so an empty bin
#: gives a large, finite contribution instead of infinity.
PSI_EPSILON = 1e-4


def _proportions(counts: IntArray | FloatArray) -> FloatArray:
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(counts / counts.sum(axis=-1, keepdims=True), dtype=np.float64)


def psi(reference: IntArray, live: IntArray) -> FloatArray:
    """Population stability index per row: sum((q - p) * ln(q / p)) over bins."""
    p = np.maximum(_proportions(reference), PSI_EPSILON)
    q = np.maximum(_proportions(live), PSI_EPSILON)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1), dtype=np.float64)


def ks_binned(reference: IntArray, live: IntArray) -> FloatArray:
    """Kolmogorov-Smirnov distance between the two empirical CDFs, read at the bin edges.

    Error bound against the exact two-sample statistic (scipy.stats.ks_2samp) on the raw
    values: ``0 <= exact - binned <= ks_tolerance(reference, live)``: within a bin the two
    CDFs can part by at most the larger of the bin's two masses.
    """
    f = np.cumsum(_proportions(reference), axis=-1)
    g = np.cumsum(_proportions(live), axis=-1)
    return np.asarray(np.max(np.abs(f - g), axis=-1), dtype=np.float64)


def ks_tolerance(reference: IntArray, live: IntArray) -> FloatArray:
    """The largest bin mass on either side: the bound on ks_binned's error."""
    both = np.maximum(_proportions(reference), _proportions(live))
    return np.asarray(np.max(both, axis=-1), dtype=np.float64)


def mean_shift(
    ref_mean: FloatArray, ref_std: FloatArray, live_sum: FloatArray, live_count: FloatArray
) -> FloatArray:
    """|live mean - reference mean| in reference standard deviations (exact, from sums)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.abs(live_sum / live_count - ref_mean) / ref_std
    return np.where(ref_std > 0, value, np.nan)


def jensen_shannon(reference: IntArray, live: IntArray) -> FloatArray:
    """Jensen-Shannon distance (base 2, in [0, 1]); like scipy.spatial.distance.jensenshannon."""
    p = _proportions(reference)
    q = _proportions(live)
    m = (p + q) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=-1)
    return np.asarray(np.sqrt(np.maximum((kl_p + kl_q) / 2.0, 0.0)), dtype=np.float64)


def chi2_pvalue(reference: IntArray, live: IntArray) -> FloatArray:
    """p-value of the chi-square test of homogeneity of the 2 x K table [reference; live].

    Categories empty on both sides are dropped; equals scipy.stats.chi2_contingency with
    ``correction=False`` (no Yates correction).
    """
    out = np.full(np.atleast_2d(reference).shape[0], np.nan)
    for i, (r, c) in enumerate(zip(np.atleast_2d(reference), np.atleast_2d(live), strict=True)):
        keep = (r + c) > 0
        r, c = r[keep].astype(np.float64), c[keep].astype(np.float64)
        if r.sum() == 0 or c.sum() == 0 or keep.sum() < 2:
            continue
        table = np.vstack([r, c])
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
        statistic = float(np.sum((table - expected) ** 2 / expected))
        out[i] = float(special.chdtrc(keep.sum() - 1, statistic))
    return out
