"""User model factories for ``kind: module`` tests, imported as ``usermodels:<name>`` (the
tests put ``tests/trainables`` on ``sys.path``, as a user's package would be installed)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

NOT_A_FACTORY = 42


def tiny_cnn(channels: int = 8, num_classes: int = 10) -> nn.Module:
    """``(B, 1, 8, 8)`` -> ``(B, num_classes)``; a plain tensor output."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


@dataclass
class Output:
    """A Hugging Face-like output: the logits in ``.logits``."""

    logits: torch.Tensor


class TinyLM(nn.Module):
    """``(B, L)`` ids -> ``Output(logits=(B, L, outputs))``, ``outputs`` by default
    ``vocab + 2``: extra rows the adapter cuts."""

    def __init__(self, vocab: int, width: int, outputs: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab + 2, width)
        self.head = nn.Linear(width, outputs or vocab + 2)

    def forward(self, x: torch.Tensor) -> Output:
        return Output(logits=self.head(torch.relu(self.embed(x))))


def tiny_lm(vocab: int = 16, width: int = 8, outputs: int | None = None) -> nn.Module:
    return TinyLM(vocab, width, outputs)


class TupleMLP(nn.Module):
    """``(B, 64)`` -> ``(logits, features)``: a tuple output, the logits first."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.relu(self.body(x))
        return self.head(features), features


def tuple_mlp() -> nn.Module:
    return TupleMLP()


def wrong_classes() -> nn.Module:
    """8 outputs, for data with 10 classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8))


def flat_only() -> nn.Module:
    """A linear layer over 64 features, without flattening: fails on ``(B, 1, 8, 8)``."""
    return nn.Linear(64, 10)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.head(x.flatten(1))}


def dict_output() -> nn.Module:
    return DictOutput()


def not_a_module() -> str:
    return "a model"


def broken(size: int = 3) -> nn.Module:
    raise ValueError(f"cannot build a model of size {size}")
