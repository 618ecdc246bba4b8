"""A user's package of dataset factories, for ``data.kind: module`` tests (put on ``sys.path``
by the ``userdata`` fixture, as an installed package would be)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, IterableDataset


class Pairs(Dataset):
    """``(x, label)`` pairs: ``x[i]`` is ``i + arange(prod(shape))`` reshaped, label
    ``i % classes``."""

    def __init__(self, rows: int, classes: int, shape: tuple[int, ...]) -> None:
        self.rows, self.classes, self.shape = rows, classes, tuple(shape)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        size = torch.Size(self.shape).numel()
        x = (index + torch.arange(size, dtype=torch.float32)).reshape(self.shape)
        return x, index % self.classes


class Sequences(Dataset):
    """1-D token sequences: item ``i`` is ``(i + arange(length)) % vocab`` (int64)."""

    def __init__(self, rows: int, length: int, vocab: int, declared: int | None = None) -> None:
        self.rows, self.length, self.vocab = rows, length, vocab
        if declared is not None:
            self.vocab_size = declared

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> torch.Tensor:
        return (index + torch.arange(self.length)) % self.vocab


class Ragged(Sequences):
    """Sequences whose item 5 is one token longer than the rest."""

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.arange(self.length + (index == 5)) % self.vocab


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(3))


def pairs(rows: int = 40, classes: int = 3, shape: tuple[int, ...] = (2, 3)) -> Pairs:
    return Pairs(rows, classes, shape)


def sequences(rows: int = 30, length: int = 8, vocab: int = 11, declared: int | None = None):
    return Sequences(rows, length, vocab, declared)


def ragged() -> Ragged:
    return Ragged(20, 6, 7)


def empty() -> Pairs:
    return Pairs(0, 2, (3,))


def stream() -> Stream:
    return Stream()


def not_a_dataset() -> int:
    return 42


def broken(**kwargs) -> Pairs:
    raise RuntimeError("no such corpus")
