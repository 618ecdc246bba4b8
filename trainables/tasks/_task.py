"""What the student predicts: one label per example (``classify``), masked tokens
(``masked_lm``) or the next token (``causal_lm``).

A task turns gathered rows of a split into ``(inputs, targets)``: targets are ``(batch,)``
class indices for ``classify`` and ``(batch, positions)`` token ids for the language-model
tasks, :data:`IGNORE` at the positions that do not count (padding, unmasked tokens). The loss,
the metrics and the difficulty scores all count exactly the positions whose target is not
:data:`IGNORE`.

Masked LM masking is static (as in BERT's original data preparation, Devlin et al. 2019): a
fixed function of (``mask_seed``, split, example, position), so the teacher's stored outputs
and every student see the same masked inputs, and a resumed run sees what it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.config import TaskConfig

IGNORE = -100  # a target that does not count (PyTorch's cross_entropy ignore_index default)
_SPLIT_SALT = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class Task:
    """A task over one dataset: ``kind`` and, for token data, the vocabulary ``vocab_size``
    (real ids ``0..V-1``), the padding id ``pad_id`` (None: no padding) and the mask id
    ``V + 1`` (masked LM)."""

    kind: str
    vocab_size: int | None = None
    pad_id: int | None = None
    mask_rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    mask_seed: int = 0

    @property
    def per_token(self) -> bool:
        """Targets are per position (the language-model tasks)."""
        return self.kind != "classify"

    @property
    def mask_id(self) -> int:
        assert self.vocab_size is not None, "a token task has a vocabulary"
        return self.vocab_size + 1

    def batch(
        self, x: np.ndarray, y: np.ndarray | None, rows: np.ndarray, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` of gathered examples ``x`` (rows ``rows`` of ``split``) with
        labels ``y`` (``classify``; None for token data)."""
        if self.kind == "classify":
            assert y is not None, "classify needs labels"
            return x, np.asarray(y, dtype=np.int64)
        tokens = np.asarray(x, dtype=np.int64)
        if self.kind == "causal_lm":
            targets = tokens[:, 1:].copy()
            if self.pad_id is not None:
                targets[targets == self.pad_id] = IGNORE
            return tokens[:, :-1], targets
        return self._mask(tokens, np.asarray(rows, dtype=np.int64), split)

    def _mask(
        self, tokens: np.ndarray, rows: np.ndarray, split: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """BERT's rule: each real token chosen with probability ``mask_rate`` (at least one
        per sequence that has a real token); a chosen token becomes the mask id with
        probability ``mask_prob``, a uniformly random real token with ``random_prob``, else
        stays; the targets are the chosen tokens."""
        n, length = tokens.shape
        real = tokens != self.pad_id if self.pad_id is not None else np.ones_like(tokens, bool)
        draws = [_uniform(self.mask_seed, split, rows, length, salt) for salt in range(3)]
        chosen = (draws[0] < self.mask_rate) & real
        lonely = ~chosen.any(axis=1) & real.any(axis=1)
        if lonely.any():  # one position, the one with the smallest draw, so it is static too
            first = np.where(real, draws[0], np.inf)[lonely].argmin(axis=1)
            chosen[np.flatnonzero(lonely), first] = True
        targets = np.where(chosen, tokens, IGNORE)
        inputs = tokens.copy()
        inputs[chosen & (draws[1] < self.mask_prob)] = self.mask_id
        swap = (
            chosen & (draws[1] >= self.mask_prob) & (draws[1] < self.mask_prob + self.random_prob)
        )
        random_ids = self._random_tokens(draws[2])
        inputs[swap] = random_ids[swap]
        return inputs, targets

    def _random_tokens(self, draw: np.ndarray) -> np.ndarray:
        """A uniformly random real token for each draw in [0, 1): never the padding id, when
        the data's padding id is one of its tokens (the model would hide it as padding)."""
        vocab, pad = self.vocab_size, self.pad_id
        inside = pad is not None and pad < vocab
        ids = np.minimum((draw * (vocab - inside)).astype(np.int64), vocab - 1 - inside)
        return ids + (ids >= pad) if inside else ids


def check_task_fits(kind: str, tokens: bool, source: str) -> None:
    """Refuse a task the loaded data cannot give (``ValueError``, one line): ``classify``
    needs ``(x, label)`` examples, the language-model tasks token sequences. The config
    catches this for every data kind but ``module``, whose items are known only once read."""
    if kind == "classify" and tokens:
        raise ValueError(
            f"task.kind: 'classify' needs (x, label) examples; {source} gives token sequences "
            "(use task.kind masked_lm or causal_lm)"
        )
    if kind != "classify" and not tokens:
        raise ValueError(
            f"task.kind: {kind!r} needs token sequences; {source} gives (x, label) examples "
            "(use task.kind classify)"
        )


def make_task(
    cfg: TaskConfig, *, vocab_size: int | None, pad_id: int | None, tokens: bool | None = None
) -> Task:
    """The task of ``cfg`` over data with this vocabulary and padding (``tokens``: whether
    the examples are token sequences, checked against the task when given)."""
    if tokens is not None:
        check_task_fits(cfg.kind, tokens, "the data")
    return Task(
        cfg.kind, vocab_size=vocab_size, pad_id=pad_id, mask_rate=cfg.mask_rate,
        mask_prob=cfg.mask_prob, random_prob=cfg.random_prob, mask_seed=cfg.mask_seed,
    )  # fmt: skip


def _uniform(seed: int, split: str, rows: np.ndarray, length: int, salt: int) -> np.ndarray:
    """``(len(rows), length)`` numbers in [0, 1), a fixed function of (seed, split, row,
    position, salt): SplitMix64 (Steele et al. 2014) of a key mixing them."""
    with np.errstate(over="ignore"):
        base = np.uint64(((seed * 0x2545F491 + _SPLIT_SALT[split]) * 7 + salt) & 0xFFFFFFFF)
        key = (rows.astype(np.uint64)[:, None] * np.uint64(length)
               + np.arange(length, dtype=np.uint64)[None, :])  # fmt: skip
        z = key * np.uint64(0x9E3779B97F4A7C15) + (base << np.uint64(32)) + base
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
