"""Adapters that turn a user's or Hugging Face model's output into a logits tensor.

The wrapped model is the adapter's submodule ``model``, so ``parameters()``, ``state_dict()``
(keys ``model.<name>``) and DDP see it; the adapter itself has no parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class OutputError(TypeError):
    """A model output holding no logits tensor."""


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, the first element of a tuple or
    list, or the ``.logits`` attribute (Hugging Face's ``ModelOutput`` and look-alikes)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise OutputError(
        f"the model returned {type(output).__name__}; expected a tensor, a tuple or list "
        "whose first element is a tensor, or an object with a .logits tensor"
    )


class LogitsAdapter(nn.Module):
    """Calls ``model(x)`` and returns its logits; for the LM tasks (``num_logits`` given) keeps
    the first ``num_logits`` entries of the last dimension (a model may have extra rows for
    the padding and mask ids)."""

    def __init__(self, model: nn.Module, num_logits: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.num_logits = num_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _keep(logits_of(self.model(x)), self.num_logits)


class HFAdapter(nn.Module):
    """Calls a Hugging Face model the way its ``forward`` wants: token ids as
    ``input_ids`` (with ``attention_mask = x != pad_id`` when the data pads), float inputs
    as ``pixel_values``; returns ``.logits``, cut to ``num_logits`` per token for the LM
    tasks."""

    def __init__(
        self, model: nn.Module, *, tokens: bool, pad_id: int | None, num_logits: int | None
    ) -> None:
        super().__init__()
        self.model = model
        self.tokens = tokens
        self.pad_id = pad_id
        self.num_logits = num_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens:
            return _keep(logits_of(self.model(pixel_values=x)), self.num_logits)
        ids = x.long()
        mask = None if self.pad_id is None else (ids != self.pad_id).long()
        return _keep(logits_of(self.model(input_ids=ids, attention_mask=mask)), self.num_logits)


def _keep(logits: torch.Tensor, num_logits: int | None) -> torch.Tensor:
    """The first ``num_logits`` entries of the last dimension (a view), or all of them."""
    if num_logits is None or logits.shape[-1] <= num_logits:
        return logits
    return logits[..., :num_logits]
