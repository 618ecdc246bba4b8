"""KNN-Shapley data values: exact against brute-force Shapley, cross-fitted, projected when
wide, and as the teacher's ``shapley`` difficulty on digits with flipped labels (what a
student prunes first and orders last)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

import trainables.curriculum._shapley as shapley_module
from trainables.bank import teacher_bank
from trainables.config import (
    CurriculumConfig,
    DataConfig,
    DataPaths,
    OptimConfig,
    PacingConfig,
    StudentConfig,
    TeacherConfig,
)
from trainables.curriculum import knn_shapley, shapley_values
from trainables.distill import open_bank
from trainables.loops import build_student, student_loop

# six training points on an integer grid (exact squared distances; ties at several test
# points), labels from three classes
TRAIN_X = np.array([[0, 0], [1, 0], [0, 2], [3, 1], [2, 2], [-1, -1]], dtype=np.float64)
TRAIN_Y = np.array([0, 1, 0, 2, 1, 0])
TEST_X = np.array([[0, 1], [2, 1], [1, 1], [-2, 0], [3, 3]], dtype=np.float64)
TEST_Y = np.array([0, 1, 2, 0, 1])


def _utility(subset: tuple[int, ...], x: np.ndarray, y: int, k: int) -> Fraction:
    """``U(S)``: the fraction of the ``min(K, |S|)`` nearest of ``S`` (by squared distance,
    then index) labelled ``y``, over ``K``."""
    dist = {i: int(((TRAIN_X[i] - x) ** 2).sum()) for i in subset}
    nearest = sorted(subset, key=lambda i: (dist[i], i))[:k]
    return Fraction(sum(int(TRAIN_Y[i] == y) for i in nearest), k)


def _brute_force(x: np.ndarray, y: int, k: int) -> list[Fraction]:
    """Shapley values by the definition: every subset of the other points, weighted by
    ``|S|! (n - |S| - 1)! / n!``."""
    n = len(TRAIN_X)
    values = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        total = Fraction(0)
        for size in range(n):
            weight = Fraction(
                math.factorial(size) * math.factorial(n - size - 1), math.factorial(n)
            )
            for subset in itertools.combinations(others, size):
                gain = _utility((*subset, i), x, y, k) - _utility(subset, x, y, k)
                total += weight * gain
        values.append(total)
    return values


@pytest.mark.parametrize("k", [1, 2, 3, 8])  # 8: more neighbours than training points
def test_knn_shapley_equals_brute_force_shapley(k):
    exact = [_brute_force(x, int(y), k) for x, y in zip(TEST_X, TEST_Y, strict=True)]
    for x, y, expected in zip(TEST_X, TEST_Y, exact, strict=True):  # each test point alone
        got = knn_shapley(TRAIN_X, TRAIN_Y, x[None], np.array([y]), k)
        np.testing.assert_allclose(got, [float(v) for v in expected], rtol=0, atol=1e-12)
    mean = [float(sum(column) / len(exact)) for column in zip(*exact, strict=True)]
    got = knn_shapley(TRAIN_X, TRAIN_Y, TEST_X, TEST_Y, k)  # the mean over the test points
    np.testing.assert_allclose(got, mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_one_test_points_values_sum_to_the_utility_of_all(k):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    test_x, test_y = rng.normal(size=(1, 4)), np.array([1])
    values = knn_shapley(x, y, test_x, test_y, k)
    nearest = np.argsort(((x - test_x) ** 2).sum(axis=1))[:k]
    assert values.sum() == pytest.approx((y[nearest] == 1).sum() / k, abs=1e-12)  # U(empty) = 0


def test_blocks_of_test_points_give_the_values_of_one_block(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)), rng.integers(0, 4, size=50)
    test_x, test_y = rng.normal(size=(23, 3)), rng.integers(0, 4, size=23)
    whole = knn_shapley(x, y, test_x, test_y, 3)
    monkeypatch.setattr(shapley_module, "_BLOCK_BYTES", 4 * 50 * 4)  # 4 test points a block
    np.testing.assert_allclose(knn_shapley(x, y, test_x, test_y, 3), whole, rtol=0, atol=1e-15)


def test_cross_fitting_values_every_row_against_the_other_folds_only(monkeypatch):
    rng = np.random.default_rng(2)
    features, labels = rng.normal(size=(101, 5)), rng.integers(0, 3, size=101)
    calls = []

    def spy(train_x, train_y, test_x, test_y, k):
        calls.append((train_x, test_x))
        return knn_shapley(train_x, train_y, test_x, test_y, k)

    monkeypatch.setattr(shapley_module, "knn_shapley", spy)
    values = shapley_values(features, labels, k=3, folds=3, max_test=20, seed=4)
    assert values.shape == (101,) and np.isfinite(values).all()
    assert sorted(len(train) for train, _ in calls) == [33, 34, 34]  # each row valued once
    for train, test in calls:
        assert len(test) == 20 and train.shape[1] == test.shape[1] == 5  # not projected
        same = (np.abs(train[:, None, :] - test[None, :, :]).max(axis=2) == 0).any()
        assert not same  # (the rows are distinct) no test row is among the rows it values
    assert (values != 0).sum() > 50


def test_a_row_is_never_valued_against_itself():
    # row 0 is the only row of class 9 and sits far from the rest: valued against itself
    # (as its own nearest test point) it would be worth 1/N or more; against the other
    # folds, where no row has its label, it can only be worth <= 0
    rng = np.random.default_rng(3)
    features = np.vstack([[[50.0, 50.0]], rng.normal(size=(40, 2))])
    labels = np.concatenate([[9], rng.integers(0, 2, size=40)])
    for seed in range(5):
        assert shapley_values(features, labels, k=3, seed=seed)[0] <= 0


def test_constant_features_and_bad_arguments():
    values = shapley_values(np.ones((10, 3)), np.arange(10) % 2, k=2)  # no division by zero
    assert np.isfinite(values).all()
    with pytest.raises(ValueError, match="folds must be >= 2"):
        shapley_values(np.ones((10, 3)), np.zeros(10), folds=1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_shapley(np.ones((3, 2)), np.zeros(3), np.ones((1, 2)), np.zeros(1), 0)


def test_up_to_max_dims_features_are_only_standardised(monkeypatch):
    rng = np.random.default_rng(5)
    features = rng.normal(3.0, 2.0, size=(60, 64)).astype(np.float32)  # <= 256: not projected
    seen = []
    monkeypatch.setattr(
        shapley_module, "knn_shapley", lambda tx, ty, sx, sy, k: seen.append(tx) or np.zeros(30)
    )
    shapley_values(features, np.arange(60) % 3, k=3, seed=0)
    standardised = (features - features.mean(axis=0)) / features.std(axis=0)
    assert [(x.dtype, x.shape) for x in seen] == [(np.float32, (30, 64))] * 2
    for x in seen:  # each fold's rows are rows of the standardised features
        match = np.abs(x[:, None, :] - standardised[None, :, :]).max(axis=2).min(axis=1)
        assert match.max() < 1e-5


def _separable_with_flips(n: int, d: int, seed: int):
    """``n`` rows in ``d`` dimensions: 4 classes around centres of a random 8-dimensional
    subspace, plus unit noise in every dimension; 10% of the labels flipped."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    centres = rng.normal(size=(4, 8)) * 4.0 @ rng.normal(size=(8, d)) / np.sqrt(8)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    flipped = rng.random(n) < 0.1
    y[flipped] = (y[flipped] + rng.integers(1, 4, size=flipped.sum())) % 4
    return x, y, flipped


def test_wide_features_are_projected_deterministically_and_still_rank_flips(monkeypatch):
    x, y, flipped = _separable_with_flips(1200, 200, seed=6)
    seen = []
    monkeypatch.setattr(shapley_module, "knn_shapley", lambda *a: seen.append(a[0].shape[1]) or
                        knn_shapley(*a))  # fmt: skip
    shapley_values(x, y, k=10, seed=3)
    assert seen == [200, 200]  # the default max_dims, 256: not projected
    monkeypatch.undo()
    values = shapley_values(x, y, k=10, seed=3, max_dims=64)
    np.testing.assert_array_equal(
        shapley_values(x, y, k=10, seed=3, max_dims=64), values
    )  # same seed
    assert not np.array_equal(
        shapley_values(x, y, k=10, seed=4, max_dims=64), values
    )  # another seed
    assert roc_auc_score(flipped, -values) >= 0.9  # low value: mislabelled
    seen = []

    def spy(train_x, train_y, test_x, test_y, k):
        seen.append(train_x.shape[1])
        return knn_shapley(train_x, train_y, test_x, test_y, k)

    monkeypatch.setattr(shapley_module, "knn_shapley", spy)
    np.testing.assert_array_equal(shapley_values(x, y, k=10, seed=3, max_dims=64), values)
    assert seen == [64, 64]  # the K-NN (and so its exact values) runs on the projection
    seen.clear()
    shapley_values(x, y, k=10, max_dims=16, seed=3)
    assert seen == [16, 16]


def _noisy_digits(home, fraction: float = 0.1, seed: int = 0):
    """Digits as train/val/test .npz files, ``fraction`` of the training labels flipped to
    another class; returns the data config and which training rows are mislabelled."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    parts = {"train": order[:1078], "val": order[1078:1437], "test": order[1437:]}
    flipped = np.zeros(1078, dtype=bool)
    flipped[rng.choice(1078, size=int(fraction * 1078), replace=False)] = True
    train_y = y[parts["train"]].copy()
    train_y[flipped] = (train_y[flipped] + rng.integers(1, 10, size=flipped.sum())) % 10
    for name, rows in parts.items():
        labels = train_y if name == "train" else y[rows]
        np.savez(home / f"{name}.npz", x=x[rows].astype(np.float32), y=labels)
    paths = DataPaths(**{name: str(home / f"{name}.npz") for name in parts})
    return DataConfig(kind="file", paths=paths), flipped


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Torch on one thread: the digits models are tiny, and two threads on a busy machine
    made the teacher about 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def noisy_bank(tmp_path_factory):
    """A real digits teacher (300 steps) trained with 10% of its training labels flipped,
    and its bank; the flipped rows."""
    home = tmp_path_factory.mktemp("noisy")
    data, flipped = _noisy_digits(home)
    cfg = TeacherConfig(data=data, optim=OptimConfig(lr=1e-3, batch_size=64, steps=300))
    teacher_bank(cfg, home / "bank", progress=lambda line: None)
    return data, str(home / "bank"), flipped


def test_the_teachers_shapley_difficulty_finds_flipped_labels(noisy_bank):
    _, bank, flipped = noisy_bank
    difficulty = open_bank(bank).scores["shapley"]
    assert difficulty.shape == (1078,)
    assert roc_auc_score(flipped, difficulty) >= 0.85  # 0.966 (width 256, not projected)


def test_a_student_orders_and_prunes_by_shapley(noisy_bank):
    data, bank, _ = noisy_bank
    cur = CurriculumConfig(
        kind="paced", score="shapley", prune_fraction=0.1, prune_by="shapley",
        pacing=PacingConfig(kind="linear", start=0.3, full_at=0.5),
    )  # fmt: skip
    student = StudentConfig(
        data=data, teacher_bank=bank, optim=OptimConfig(steps=100), eval_every=50, curriculum=cur
    )
    assert [record for record, _ in student_loop(student)][-1]["val_accuracy"] > 0.8


def _student_pool(data, bank, cur: CurriculumConfig) -> np.ndarray:
    return build_student(StudentConfig(data=data, teacher_bank=bank, curriculum=cur)).sampler.pool


def test_pruning_by_shapley_drops_the_flipped_labels_first(noisy_bank):
    data, bank, flipped = noisy_bank
    cur = CurriculumConfig(kind="none", prune_fraction=0.1, prune_by="shapley")
    pool = _student_pool(data, bank, cur)
    assert len(pool) == 1078 - 107
    dropped = np.ones(1078, dtype=bool)
    dropped[pool] = False
    # random pruning would drop 10% of the flipped rows; the sign flipped, about none
    assert dropped[flipped].mean() >= 0.6


def test_ordering_by_shapley_puts_the_flipped_labels_late(noisy_bank):
    data, bank, flipped = noisy_bank
    cur = CurriculumConfig(kind="paced", score="shapley", order="easy_first")
    order = _student_pool(data, bank, cur)  # the paced order: the most valuable first
    assert sorted(order) == list(range(1078))
    position = np.empty(1078)
    position[order] = np.arange(1078) / 1078
    assert position[flipped].mean() > 0.7  # 0.5 for a random order, < 0.3 reversed
