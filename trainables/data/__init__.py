"""Datasets as three in-memory splits (plain NumPy; no Ray, no torch)."""

from trainables.data._check import DataError, check_data
from trainables.data._splits import Splits, load_splits, sparse_parity

__all__ = ["DataError", "Splits", "check_data", "load_splits", "sparse_parity"]
