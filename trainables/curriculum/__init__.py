"""Curricula: difficulty scores, pacing functions and batch samplers (plain NumPy)."""

from trainables.curriculum._pacing import ConstantPacing, LinearPacing, Pacing
from trainables.curriculum._samplers import PacedSampler, Sampler, ShuffleSampler
from trainables.curriculum._scores import confidence_difficulty, easy_first_order

__all__ = [
    "ConstantPacing",
    "LinearPacing",
    "PacedSampler",
    "Pacing",
    "Sampler",
    "ShuffleSampler",
    "confidence_difficulty",
    "easy_first_order",
]
