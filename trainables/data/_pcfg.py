"""Sequences from a seeded probabilistic context-free grammar (``data.kind: pcfg``).

The grammar family of Allen-Zhu & Li's cfg3 ("Physics of Language Models, Part 1"), used
by Panigrahi et al. 2024 for progressive distillation: ``pcfg_levels`` levels of
nonterminals, the first holding the root alone (cfg3's root level) and each other holding
``pcfg_symbols`` symbols; every nonterminal has ``pcfg_rules`` distinct rules (drawn once
from ``pcfg_seed``), each rewriting it to 2 or 3 symbols of the next level, chosen with equal
probability; the last level's symbols rewrite to 2 or 3 terminals ``0..V-1``. A sequence is
generated top-down from the root, so its natural length lies between ``2**pcfg_levels`` and
``3**pcfg_levels`` (about ``2.5**pcfg_levels``), then cut to ``seq_len`` or padded with the
id ``V`` (``Splits.pad_id``; None when the grammar can derive nothing shorter than
``seq_len``). cfg3b itself is ``pcfg_levels: 6`` (root, then five levels of 3 symbols, sequences
of ~250 terminals).

``V`` is ``data.vocab_size``, default 3: cfg3's three terminals. (Our notes record
"vocab 8" for Panigrahi et al.'s cfg3b runs, which we read as counting their tokenizer's
special tokens; set ``vocab_size: 8`` to match that count of ids.)

Training sequences and each held-out split are drawn from their own stream of
``split_seed``, so changing ``train_size`` leaves validation and test unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.data._base import DataInfo, Splits

DEFAULT_VOCAB = 3  # cfg3's terminals
_GRAMMAR_STREAM, _SAMPLE_STREAM = 0x9CF6, 0x5A3B


@dataclass(frozen=True)
class Grammar:
    """A leveled grammar. For level ``l`` (0 = the root's), ``rhs[l]`` is ``(symbols_l,
    rules, 3)`` int64, the right-hand sides (``-1`` past their end), naming symbols of level
    ``l + 1``, or terminals ``0..vocab_size-1`` for the last level; ``lengths[l]`` is
    ``(symbols_l, rules)``, each 2 or 3. Every rule of a symbol is equally likely."""

    rhs: tuple[np.ndarray, ...]
    lengths: tuple[np.ndarray, ...]
    vocab_size: int

    @property
    def levels(self) -> int:
        return len(self.rhs)

    def min_length(self) -> int:
        """The length of the root's shortest derivation."""
        shortest = np.ones(self.vocab_size, dtype=np.int64)  # a terminal derives itself
        for rhs in reversed(self.rhs):
            parts = np.where(rhs >= 0, shortest[np.maximum(rhs, 0)], 0)
            shortest = parts.sum(axis=2).min(axis=1)
        return int(shortest[0])


def pcfg_grammar(
    *,
    levels: int = 4,
    symbols: int = 3,
    rules: int = 2,
    vocab_size: int = DEFAULT_VOCAB,
    seed: int = 0,
) -> Grammar:
    """The seeded random grammar described in the module docstring."""
    if levels < 1 or symbols < 1 or rules < 1 or vocab_size < 1:
        raise ValueError(
            f"pcfg_grammar needs levels, symbols, rules, vocab_size >= 1, got {levels}, "
            f"{symbols}, {rules}, {vocab_size}"
        )
    rng = np.random.default_rng([seed, _GRAMMAR_STREAM])
    all_rhs, all_lengths = [], []
    for level in range(levels):
        count = 1 if level == 0 else symbols
        below = vocab_size if level == levels - 1 else symbols
        rhs = np.full((count, rules, 3), -1, dtype=np.int64)
        lengths = np.zeros((count, rules), dtype=np.int64)
        for symbol in range(count):
            for rule, body in enumerate(_distinct_bodies(rng, rules, below)):
                rhs[symbol, rule, : len(body)] = body
                lengths[symbol, rule] = len(body)
        all_rhs.append(rhs)
        all_lengths.append(lengths)
    return Grammar(tuple(all_rhs), tuple(all_lengths), vocab_size)


def _distinct_bodies(rng: np.random.Generator, rules: int, below: int) -> list[tuple[int, ...]]:
    """``rules`` right-hand sides of 2 or 3 symbols of ``0..below-1``, distinct while the
    alphabet allows (``below**2 + below**3`` bodies exist)."""
    bodies: list[tuple[int, ...]] = []
    while len(bodies) < rules:
        size = int(rng.integers(2, 4))
        body = tuple(int(s) for s in rng.integers(below, size=size))
        if body not in bodies or len(set(bodies)) >= below**2 + below**3:
            bodies.append(body)
    return bodies


def pcfg_sample(
    grammar: Grammar, count: int, *, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` sequences derived from the root, cut or padded (id ``vocab_size``) to
    ``seq_len``: int64 ``(count, seq_len)``. Level by level for all sequences at once; a
    symbol whose first terminal would fall past ``seq_len`` is dropped early."""
    symbol = np.zeros(count, dtype=np.int64)  # the root of each sequence
    owner = np.arange(count)  # the sequence each symbol belongs to, in order
    slots = np.arange(3)
    for rhs, lengths in zip(grammar.rhs, grammar.lengths, strict=True):
        rule = rng.integers(rhs.shape[1], size=len(symbol))
        parts = lengths[symbol, rule]
        symbol = rhs[symbol, rule][slots < parts[:, None]]
        owner = np.repeat(owner, parts)
        keep = _positions(owner, count) < seq_len  # a symbol derives >= 1 terminal
        symbol, owner = symbol[keep], owner[keep]
    out = np.full((count, seq_len), grammar.vocab_size, dtype=np.int64)
    out[owner, _positions(owner, count)] = symbol
    return out


def _positions(owner: np.ndarray, count: int) -> np.ndarray:
    """Each entry's position within its sequence (``owner`` is sorted)."""
    sizes = np.bincount(owner, minlength=count)
    return np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _grammar(data: Any) -> Grammar:
    return pcfg_grammar(
        levels=data.pcfg_levels,
        symbols=data.pcfg_symbols,
        rules=data.pcfg_rules,
        vocab_size=data.vocab_size or DEFAULT_VOCAB,
        seed=data.pcfg_seed,
    )


def _pad_id(grammar: Grammar, seq_len: int) -> int | None:
    return grammar.vocab_size if grammar.min_length() < seq_len else None


def pcfg_info(data: Any) -> DataInfo:
    """What a ``pcfg`` dataset will be (the grammar is built; no sequence is)."""
    grammar = _grammar(data)
    vocab = grammar.vocab_size
    rows = data.train_size + 2 * data.holdout_size
    return DataInfo((data.seq_len,), True, vocab, vocab, _pad_id(grammar, data.seq_len), rows)


def load_pcfg(data: Any) -> Splits:
    """``train_size`` training sequences and ``holdout_size`` each for validation and test,
    int64 ``(n, seq_len)``; deterministic in (``pcfg_seed``, ``split_seed``)."""
    grammar = _grammar(data)

    def draw(split: int, count: int) -> np.ndarray:
        rng = np.random.default_rng([data.split_seed, _SAMPLE_STREAM, split])
        return pcfg_sample(grammar, count, seq_len=data.seq_len, rng=rng)

    vocab = grammar.vocab_size
    return Splits(
        x_train=draw(0, data.train_size),
        y_train=None,
        x_val=draw(1, data.holdout_size),
        y_val=None,
        x_test=draw(2, data.holdout_size),
        y_test=None,
        num_classes=vocab,
        tokens=True,
        vocab_size=vocab,
        pad_id=_pad_id(grammar, data.seq_len),
    )
