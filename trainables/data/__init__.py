"""Datasets as three splits of row stores (plain NumPy; no Ray; torch-free).

One entry point per side: :func:`load_splits` in a trial, :func:`check_data` on the driver
before anything starts. Kinds: ``digits``, ``file``, ``sparse_parity`` (features or images
with class labels), ``tokens``, ``text``, ``pcfg`` (token sequences) and ``module`` (a user's
dataset of either). Each training row's source (``data.source_column``,
``data.noisy_source``): :attr:`Splits.source_train`, :attr:`Splits.source_names`
(:mod:`trainables.data._sources`).
"""

from trainables.data._base import DataError, DataInfo, Splits
from trainables.data._pcfg import Grammar, pcfg_grammar, pcfg_sample
from trainables.data._rows import ConcatRows, DatasetRows, IndexRows, RowStore
from trainables.data._splits import check_data, data_files, load_splits, sparse_parity

__all__ = [
    "ConcatRows",
    "DataError",
    "DataInfo",
    "DatasetRows",
    "Grammar",
    "IndexRows",
    "RowStore",
    "Splits",
    "check_data",
    "data_files",
    "load_splits",
    "pcfg_grammar",
    "pcfg_sample",
    "sparse_parity",
]
