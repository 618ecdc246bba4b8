"""KNN-Shapley data values (Jia et al. 2019), exact and cross-fitted, as a difficulty source.

:func:`knn_shapley` is the exact Shapley value of every training point for the unweighted
K-nearest-neighbour classifier's utility (Jia et al. 2019, "Efficient Task-Specific Data
Valuation for Nearest Neighbor Algorithms", VLDB, Theorem 1): one sort per test point, no
model refits. :func:`shapley_values` cross-fits it over the training rows, so that no row is
valued against itself; the teacher stores ``-shapley_values(features of its penultimate
layer)`` as the ``shapley`` difficulty (a low value: a harmful or mislabelled example, hard).
Features wider than 256 are randomly projected to 256 dimensions first (Johnson-Lindenstrauss);
the values are then exact for the K-NN on the projection. 256 keeps the common penultimate
widths (up to 256) exact and halves a 512-wide one; the figures below are for a projection
to 64, which costs ranking quality on wide features (measured below), so the default was
raised to 256 after them: unprojected 512-wide features cost 17 s CPU and +627 MB per
200,000 rows, so 256 costs less than that.

Cost, measured on this project's development machine (2 CPU cores, shared with other jobs
while measured, load average 6-11, so the wall times vary; "CPU" is the process's time
over all its threads, about the wall time on an idle machine: the sorts run on one thread)
with ``shapley_values``' defaults (K = 10, 2 folds, 1,000 test rows a fold), on synthetic
float32 features (10 Gaussian classes, 10% of the labels flipped); the peak-RSS increase is
``ru_maxrss`` after less before (the features themselves excluded), the traced peak is
``tracemalloc``'s:

- 200,000 x 512 (projected to 64): 14 s CPU (17-42 s wall), +116 MB RSS (149 MB traced).
  The float64, unprojected version before it: 39 s CPU (117 s wall), +2.3 GB.
- 100,000 x 64: 6-7 s CPU (12-18 s wall), +103 MB RSS (107 MB traced); before: 14 s CPU
  (31 s wall), +465 MB.
- digits (1,797 x 64 pixels): 0.14 s CPU, +6 MB; before: 0.27 s CPU, +41 MB.

About 70% of the time is the sort per test point (about 4 ms for 100,000 keys); the rest is
the distances, the recursions and the projection. The projection's price in ranking the
flipped labels (AUROC of the negated values): on the digits teacher's 256-wide penultimate
features (``tests/trainables/test_shapley.py``) 0.960 against 0.966 unprojected; on the
synthetic 200,000 x 512 set, whose class signal is spread thinly over all 512 isotropic
dimensions (the worst case for a projection), 0.834 against 0.997 unprojected (0.919 with
``max_dims=128``); unprojected there (``max_dims=512``) costs 17 s CPU and +627 MB. The
100,000 x 64 and digits values are those of before (AUROC 0.864 and 0.997 both).

Truncated Monte Carlo Data Shapley (Ghorbani & Zou 2019, "TMC-Shapley") is not provided,
because it needs hours to days at 10,000 examples. Measured on this project's development
machine (2 CPU cores; scikit-learn 1.9 ``LogisticRegression`` with lbfgs, 64 standard-normal
features, 10 classes, one BLAS thread; the default two threads were 3-5x slower): one fit on
5,000 rows takes 0.04-0.06 s, one on 10,000 rows 0.07 s. A TMC permutation refits the model
on each prefix of a random order of the n points until the score is within a tolerance of
the full-data score; summing the measured fit times over the prefixes of n = 10,000 gives
about 410 s for a whole permutation, and 16 s, 53 s or 150 s when truncated after 10%, 25%
or 50% of the points. The authors' code (github.com/amiratag/DataShapley) runs
``trials=3000`` permutations by default (``shap_utils.marginals``) and its stopping rule
(``shap_utils.error``) cannot stop before 100 permutations, and then only once the running
means moved, on average over the points, less than the chosen relative error over the last
100. So TMC at 10,000 examples costs at least 100 x 16 s, about 0.4 h, for the fewest
permutations that rule allows (with truncation at 10%); at their default of 3,000
permutations it is 13 h (truncated at 10%) to 44 h (at 25%) of one core, 340 h
untruncated, i.e. about 1 to 21 h even on 16 cores, per teacher. KNN-Shapley values the
same 10,000 examples exactly in about a second.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 64 << 20  # a block of test points' (block, n_train) float32 distance matrix
_CHUNK_BYTES = 16 << 20  # rows standardised (and projected) at a time


def knn_shapley(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int
) -> np.ndarray:
    """Exact KNN-Shapley values of the training points, averaged over the test points.

    The utility of a training subset ``S`` for one test point is the unweighted K-NN
    classifier's likelihood of the right label, ``U(S) = (1/K) sum_{j=1}^{min(K, |S|)}
    1[y_{alpha_j(S)} = y_test]`` (``alpha_j(S)``: the ``j``-th nearest point of ``S``;
    ``U(empty) = 0``). With the ``N`` training points sorted by Euclidean distance to the
    test point (nearest first, ties broken by index), Theorem 1 of Jia et al. (2019) gives
    the Shapley values by a recursion from the farthest point::

        s_{alpha_N} = 1[y_{alpha_N} = y_test] / N
        s_{alpha_i} = s_{alpha_{i+1}}
                      + (1[y_{alpha_i} = y_test] - 1[y_{alpha_{i+1}} = y_test]) / K * min(K, i) / i

    The first line assumes ``K <= N``; in general it is ``1[...] * min(K, N) / (N K)``,
    which is what is computed (for ``K >= N`` the utility is additive and every value is
    ``1[...] / K``). The values of one test point sum to ``U(all)`` (efficiency).

    The features are used as float32, and so are the distances that rank the training
    points (``|x|^2 - 2 x.t``: the squared distance less the test point's own ``|t|^2``,
    which does not change its ranking; exact for small integer features). A test point's
    ranking is one sort of ``N`` uint64 keys (the distance's order-preserving bits, then
    the index: ties go to the lower index) and its recursion runs in float64.

    Cost: ``O(n_test * n_train * (d + log n_train))`` time (the distances, then one sort per
    test point). Memory: one block of test points' float32 distance matrix, at most about
    64 MB, plus about 70 bytes per training point for one test point's sort and recursion.

    Args:
        train_x: ``(n_train, d)`` features.
        train_y: ``(n_train,)`` labels.
        test_x: ``(n_test, d)`` features.
        test_y: ``(n_test,)`` labels.
        k: the neighbours ``K`` of the classifier, ``>= 1``.

    Returns:
        ``(n_train,)`` float64: each training point's value, the mean over the test points.
    """
    train_x, test_x = _matrix(train_x, "train_x"), _matrix(test_x, "test_x")
    train_y, test_y = np.asarray(train_y).reshape(-1), np.asarray(test_y).reshape(-1)
    n = len(train_x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(train_y) != n or len(test_y) != len(test_x):
        raise ValueError(
            f"features and labels differ in length: train {n} and {len(train_y)}, "
            f"test {len(test_x)} and {len(test_y)}"
        )
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x differ in features: {train_x.shape[1]} and {test_x.shape[1]}"
        )
    if n >= 1 << 32:
        raise ValueError(f"at most 2**32 - 1 training points (an index in 32 bits), got {n}")
    values = np.zeros(n)
    if n == 0 or len(test_x) == 0:
        return values
    ranks = np.arange(1, n + 1)
    step = np.minimum(k, ranks) / (ranks * k)  # min(K, i) / (i K), i = 1..N
    del ranks
    train_sq = np.einsum("ij,ij->i", train_x, train_x)
    index = np.arange(n, dtype=np.uint64)
    block = max(1, min(len(test_x), _BLOCK_BYTES // (4 * n)))
    dist = np.empty((block, n), dtype=np.float32)
    # one test point's buffers: its sort keys, then its recursion in float64
    bits, keys = np.empty(n, dtype=np.uint32), np.empty(n, dtype=np.uint64)
    order = keys.view(np.int64)  # once sorted and masked: the indices, nearest first
    labels, match = np.empty(n, dtype=train_y.dtype), np.empty(n, dtype=bool)
    s = np.empty(n)
    for start in range(0, len(test_x), block):
        tx, ty = test_x[start : start + block], test_y[start : start + block]
        part = dist[: len(tx)]
        np.matmul(tx * np.float32(-2), train_x.T, out=part)
        part += train_sq  # |x|^2 - 2 x.t: |x - t|^2 less |t|^2, the same ranking
        for row, label in zip(part, ty, strict=True):
            # order-preserving uint32 of a float32: negatives have every bit flipped, the
            # rest only the sign bit
            raw = row.view(np.uint32)
            np.right_shift(raw, 31, out=bits)
            np.negative(bits, out=bits)  # 0 or 0xFFFFFFFF
            bits |= np.uint32(1 << 31)
            bits ^= raw
            keys[:] = bits
            keys <<= np.uint64(32)
            keys |= index  # ties: the lower index first
            keys.sort()
            keys &= np.uint64(0xFFFFFFFF)  # the indices (as int64: ``order``)
            np.take(train_y, order, out=labels, mode="clip")  # in range
            np.equal(labels, label, out=match)
            # s_i = s_N + sum_{j=i}^{N-1} (m_j - m_{j+1}) step_j, a reversed cumulative sum
            last = step[-1] if match[-1] else 0.0  # min(K, N) / (N K)
            if n > 1:
                m = match.view(np.int8)
                increments = s[:-1]
                np.subtract(m[:-1], m[1:], out=increments, dtype=np.float64)
                increments *= step[:-1]
                np.cumsum(increments[::-1], out=increments[::-1])
                increments += last
            s[-1] = last
            values[order] += s
    return values / len(test_x)


def shapley_values(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 10,
    folds: int = 2,
    max_test: int = 1000,
    max_dims: int = 256,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted KNN-Shapley values (:func:`knn_shapley`) of every row (higher = more
    useful; low or negative = harmful, e.g. mislabelled).

    The features are standardised (per dimension, over all rows; a constant dimension is
    only centred). Wider than ``max_dims``, they are then projected to ``max_dims``
    dimensions by a Gaussian random projection (entries ``N(0, 1 / max_dims)``, drawn
    with ``seed``): by the Johnson-Lindenstrauss lemma it keeps the distances between the
    rows within a small factor, so the neighbours change little, and the K-NN whose
    utility is valued then runs on the projection: the values are the exact KNN-Shapley
    values of that K-NN (not of a K-NN on the unprojected features). ``max_dims`` or fewer
    dimensions are used as they are. The rows are dealt into ``folds`` folds by a
    permutation seeded with ``seed``; each fold's rows are the K-NN's training set and are
    valued against at most ``max_test`` rows drawn (seeded) from the other folds, so no row
    values itself and nothing outside ``features`` (no validation split) is read. A value
    is a mean over test points of per-point values that scale with the training set's size
    (about ``1/N``), so values of different folds are comparable because the folds are of
    (near) equal size (they differ by at most one row).

    Args:
        features: ``(n, ...)`` (flattened to ``(n, d)``), e.g. a teacher's penultimate layer.
        labels: ``(n,)`` class labels.
        k: the classifier's neighbours ``K``.
        folds: the number of folds, ``>= 2``.
        max_test: test rows per fold at most.
        max_dims: the most dimensions the K-NN uses; wider features are projected.
        seed: the folds' permutation, the test rows' draw and the projection.

    Cost: standardising (and projecting) the features a chunk of rows at a time, then
    ``folds`` calls of :func:`knn_shapley` with ``n / folds`` training rows and at most
    ``max_test`` test rows: ``O(n d min(d, max_dims) + max_test * n * (min(d, max_dims) +
    log n))``. Memory: a float32 ``(n, min(d, max_dims))`` copy of the features, the
    folds' copies of it, and :func:`knn_shapley`'s blocks (no full-size float64 copy).

    Returns:
        ``(n,)`` float64 values.
    """
    x = np.asarray(features)
    if x.ndim == 0:
        raise ValueError("features must be (n, d), got a scalar")
    x = x.reshape(len(x), -1)
    y = np.asarray(labels).reshape(-1)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"features has {n} rows but labels has {len(y)}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2 (a row is never valued against itself), got {folds}")
    if n < folds:
        raise ValueError(f"{n} rows cannot be split into {folds} folds")
    if max_test < 1:
        raise ValueError(f"max_test must be >= 1, got {max_test}")
    if max_dims < 1:
        raise ValueError(f"max_dims must be >= 1, got {max_dims}")
    x = _standardised(x, max_dims, seed)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    values = np.zeros(n)
    for f in range(folds):
        train, others = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        test = np.sort(rng.choice(others, size=min(max_test, len(others)), replace=False))
        values[train] = knn_shapley(x[train], y[train], x[test], y[test], k)
    return values


def _standardised(x: np.ndarray, max_dims: int, seed: int) -> np.ndarray:
    """``x`` standardised per column (a constant column only centred) and, wider than
    ``max_dims``, times a seeded ``(d, max_dims)`` Gaussian matrix of variance
    ``1 / max_dims``: a new float32 array, built a chunk of rows at a time (the mean and
    standard deviation are summed in float64, in two passes)."""
    n, d = x.shape
    chunk = max(1, _CHUNK_BYTES // (8 * max(d, 1)))
    starts = range(0, n, chunk)
    mean = np.zeros(d)
    for start in starts:
        mean += x[start : start + chunk].sum(axis=0, dtype=np.float64)
    mean /= max(n, 1)
    var = np.zeros(d)
    for start in starts:
        centred = x[start : start + chunk] - mean
        var += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(var / max(n, 1))
    scale = 1.0 / np.where(std > 0, std, 1.0)
    projection = None
    if d > max_dims:
        rng = np.random.default_rng([seed, 0x4A4C])  # its own stream: the folds' is unchanged
        projection = (rng.standard_normal((d, max_dims)) / np.sqrt(max_dims)).astype(np.float32)
    out = np.empty((n, d if projection is None else max_dims), dtype=np.float32)
    for start in starts:
        rows = x[start : start + chunk] - mean  # float64, a chunk: x is never written
        rows *= scale
        if projection is None:
            out[start : start + chunk] = rows
        else:
            np.matmul(rows.astype(np.float32), projection, out=out[start : start + chunk])
    return out


def _matrix(array: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 0:
        raise ValueError(f"{name} must be (n, d), got a scalar")
    return a.reshape(len(a), -1).astype(np.float32, copy=False)
