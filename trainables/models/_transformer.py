"""A plain ``torch.nn`` transformer over token ids.

Pre-norm encoder layers (``norm_first``, as in GPT-2, Radford et al. 2019, and Xiong et al.
2020, "On Layer Normalization in the Transformer Architecture") with learned token and
position embeddings and a final LayerNorm. One class serves the three tasks:

- ``masked_lm``: bidirectional (BERT, Devlin et al. 2019), logits at every position;
- ``causal_lm``: decoder-only with a causal mask (GPT), logits at every position;
- ``classify``: bidirectional, mean-pooled over the non-padding positions, one logit row.

Everything is batched tensor code (no loop over tokens), so torch's fused attention
(``scaled_dot_product_attention``, with ``is_causal`` when causal) does the work.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenTransformer(nn.Module):
    """``(B, L)`` token ids in ``[0, vocab_size + 2)`` -> ``(B, L, num_outputs)`` logits (the
    LM tasks) or ``(B, num_outputs)`` (``pool=True``, classification).

    ``vocab_size + 2`` embedding rows: the data's ``V`` tokens, its padding id ``V`` and the
    masked-LM mask id ``V + 1``. Positions where the input equals ``pad_id`` are hidden from
    attention as keys (bidirectional models only: a causal model's padding sits at the end,
    so the causal mask already hides it) and left out of the pooled mean.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        num_outputs: int,
        width: int,
        depth: int,
        heads: int,
        max_length: int,
        dropout: float,
        causal: bool,
        pool: bool,
        pad_id: int | None,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.pool = pool
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size + 2, width)
        self.position_embedding = nn.Embedding(max_length, width)
        # GPT-2's initialisation of the embeddings: N(0, 0.02)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=4 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # nested tensors do not apply to pre-norm layers; saying so spares a warning
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        h = self.token_embedding(x) + self.position_embedding.weight[:length]
        h = self.dropout(h)
        padding = self._padding(x)
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device)
            h = self.layers(h, mask=mask.to(h.dtype), is_causal=True)
        else:
            h = self.layers(h, src_key_padding_mask=self._key_mask(padding))
        h = self.norm(h)
        if self.pool:
            h = self._mean(h, padding)
        return self.head(h)

    def _padding(self, x: torch.Tensor) -> torch.Tensor | None:
        """``(B, L)`` bool, True at padding; None when the data has no padding."""
        return None if self.pad_id is None else x == self.pad_id

    @staticmethod
    def _key_mask(padding: torch.Tensor | None) -> torch.Tensor | None:
        """The key padding mask, except for all-padding rows: a query with every key hidden
        has a softmax over nothing (NaN), so such rows see all their (padding) keys."""
        if padding is None:
            return None
        return padding & ~padding.all(dim=1, keepdim=True)

    @staticmethod
    def _mean(h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """``(B, L, W)`` -> ``(B, W)``: the mean over non-padding positions (zero for an
        all-padding row)."""
        if padding is None:
            return h.mean(dim=1)
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
