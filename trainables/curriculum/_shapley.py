"""KNN-Shapley data values (Jia et al. 2019), exact and cross-fitted, as a difficulty source.

:func:`knn_shapley` is the exact Shapley value of every training point for the unweighted
K-nearest-neighbour classifier's utility (Jia et al. 2019, "Efficient Task-Specific Data
Valuation for Nearest Neighbor Algorithms", VLDB, Theorem 1): one sort per test point, no
model refits. :func:`shapley_values` cross-fits it over the training rows, so that no row is
valued against itself; the teacher stores ``-shapley_values(features of its penultimate
layer)`` as the ``shapley`` difficulty (a low value: a harmful or mislabelled example, hard).

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

_BLOCK_BYTES = 64 << 20  # a block of test points' (block, n_train) float64 distance matrix


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

    Cost: ``O(n_test * n_train * (d + log n_train))`` time (the distances, then one sort per
    test point); memory bounded by blocks of test points whose distance matrix is at most
    about 64 MB (a few such matrices are alive at once).

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
    values = np.zeros(n)
    if n == 0 or len(test_x) == 0:
        return values
    ranks = np.arange(1, n + 1)
    step = np.minimum(k, ranks) / (ranks * k)  # min(K, i) / (i K), i = 1..N
    train_sq = np.einsum("ij,ij->i", train_x, train_x)
    block = max(1, _BLOCK_BYTES // (8 * n))
    for start in range(0, len(test_x), block):
        tx, ty = test_x[start : start + block], test_y[start : start + block]
        # squared distances: the order is what counts (exact for small integer features)
        dist = train_sq[None, :] - 2.0 * (tx @ train_x.T) + np.einsum("ij,ij->i", tx, tx)[:, None]
        order = np.argsort(dist, axis=1, kind="stable")  # ties: the lower index first
        del dist
        match = (train_y[order] == ty[:, None]).astype(np.float64)
        # s_i = s_N + sum_{j=i}^{N-1} (m_j - m_{j+1}) step_j, a reversed cumulative sum
        s = np.empty_like(match)
        s[:, -1] = match[:, -1] * step[-1]  # min(K, N) / (N K)
        if n > 1:
            increments = (match[:, :-1] - match[:, 1:]) * step[:-1]
            s[:, :-1] = s[:, -1:] + np.cumsum(increments[:, ::-1], axis=1)[:, ::-1]
        values += np.bincount(order.ravel(), weights=s.ravel(), minlength=n)
    return values / len(test_x)


def shapley_values(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 10,
    folds: int = 2,
    max_test: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted KNN-Shapley values (:func:`knn_shapley`) of every row (higher = more
    useful; low or negative = harmful, e.g. mislabelled).

    The features are standardised (per dimension, over all rows; a constant dimension is
    only centred). The rows are dealt into ``folds`` folds by a permutation seeded with
    ``seed``; each fold's rows are the K-NN's training set and are valued against at most
    ``max_test`` rows drawn (seeded) from the other folds, so no row values itself and
    nothing outside ``features`` (no validation split) is read. A value is a mean over test
    points of per-point values that scale with the training set's size (about ``1/N``), so
    values of different folds are comparable because the folds are of (near) equal size
    (they differ by at most one row).

    Args:
        features: ``(n, ...)`` (flattened to ``(n, d)``), e.g. a teacher's penultimate layer.
        labels: ``(n,)`` class labels.
        k: the classifier's neighbours ``K``.
        folds: the number of folds, ``>= 2``.
        max_test: test rows per fold at most.
        seed: the folds' permutation and the test rows' draw.

    Cost: ``folds`` calls of :func:`knn_shapley` with ``n / folds`` training rows and at
    most ``max_test`` test rows: ``O(folds * max_test * (n / folds) * (d + log n))``.

    Returns:
        ``(n,)`` float64 values.
    """
    x = _matrix(features, "features")
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
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    values = np.zeros(n)
    for f in range(folds):
        train, others = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        test = np.sort(rng.choice(others, size=min(max_test, len(others)), replace=False))
        values[train] = knn_shapley(x[train], y[train], x[test], y[test], k)
    return values


def _matrix(array: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 0:
        raise ValueError(f"{name} must be (n, d), got a scalar")
    return a.reshape(len(a), -1).astype(np.float64, copy=False)
