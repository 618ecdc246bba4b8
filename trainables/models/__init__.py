"""Models (plain PyTorch)."""

from trainables.models._mlp import mlp

__all__ = ["mlp"]
