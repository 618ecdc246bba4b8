from __future__ import annotations

import numpy as np


def confidence_difficulty(teacher_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Difficulty ``1 - p_teacher(y | x)`` per example, in ``[0, 1]``; higher is harder.

    The transfer-teacher score of Hacohen & Weinshall (2019): the teacher's softmax
    probability of the true class, turned into a difficulty.

    Args:
        teacher_logits: ``(n, classes)``.
        labels: ``(n,)`` integer classes.
    """
    logits = np.asarray(teacher_logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return 1.0 - probs[np.arange(len(labels)), labels]


def easy_first_order(difficulty: np.ndarray) -> np.ndarray:
    """Example indices from easiest to hardest (stable: ties keep index order)."""
    return np.argsort(difficulty, kind="stable")
