"""Build any kind of model from its config, and check it fits the data and the task.

``build_model`` is the one entry point the loops call: it picks the kind's builder, then runs
the model once on a tiny batch so that a model that cannot take the data's inputs, or gives
the wrong number of logits, fails at build time with a one-line :class:`ModelError` instead
of deep inside the first training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from trainables.config import ModelConfig
from trainables.models._adapter import HFAdapter, LogitsAdapter, OutputError
from trainables.models._cnn import cnn
from trainables.models._errors import ModelError, describe
from trainables.models._hf import check_positions, from_architecture, from_path
from trainables.models._mlp import mlp
from trainables.models._module import from_factory
from trainables.models._transformer import TokenTransformer

LM_TASKS = ("masked_lm", "causal_lm")
DRY_BATCH = 2


@dataclass(frozen=True)
class Target:
    """What the model must do: map ``(B, *input_shape)`` inputs to the task's logits.

    ``input_shape`` is what the model sees per example: the data's ``example_shape``, except
    for ``causal_lm``, where the engine feeds ``x[:, :-1]`` (one token fewer).
    ``vocab_size`` is not None exactly when the inputs are token ids.
    """

    task: str
    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int | None
    pad_id: int | None
    where: str

    @property
    def tokens(self) -> bool:
        return self.vocab_size is not None

    @property
    def expected(self) -> tuple[int, ...]:
        """The output shape for a batch of :data:`DRY_BATCH` examples."""
        if self.task in LM_TASKS:
            return (DRY_BATCH, *self.input_shape, self.num_classes)
        return (DRY_BATCH, self.num_classes)


def build_model(
    cfg: ModelConfig,
    *,
    task: str,
    example_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = None,
    pad_id: int | None = None,
    where: str = "model",
) -> nn.Module:
    """The model ``cfg`` describes, mapping a batch ``(B, *example_shape)`` to logits:
    ``classify`` ``(B, num_classes)``; ``masked_lm`` ``(B, L, V)``; ``causal_lm`` takes
    ``(B, L - 1)`` (the engine feeds ``x[:, :-1]``) and gives ``(B, L - 1, V)``.

    For token data pass ``vocab_size`` (``V``, then ``num_classes == V`` for the LM tasks)
    and ``pad_id``; the inputs are then int64 ids in ``[0, V + 2)``. ``where`` is the config
    path for messages (``model``, ``teacher.model``). The model is on the CPU, in training
    mode (a user factory's model: in the mode the factory left it). Raises
    :class:`ModelError` (one line) when it cannot fit the data or the task.
    """
    shape = tuple(int(d) for d in example_shape)
    target = _target(task, shape, num_classes, vocab_size, pad_id, where)
    model = _BUILDERS[cfg.kind](cfg, target)
    check_output(model, target)
    return model


def _target(
    task: str,
    example_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None,
    pad_id: int | None,
    where: str,
) -> Target:
    if task in LM_TASKS and vocab_size is None:
        raise ModelError(f"{where}: task {task!r} needs token-id data, the data has no vocabulary")
    input_shape = example_shape
    if task == "causal_lm":
        if len(example_shape) != 1 or example_shape[0] < 2:
            raise ModelError(
                f"{where}: task 'causal_lm' needs token sequences of at least 2 tokens, "
                f"the data's examples have shape {example_shape}"
            )
        input_shape = (example_shape[0] - 1,)
    return Target(task, input_shape, num_classes, vocab_size, pad_id, where)


def _mlp(cfg: ModelConfig, target: Target) -> nn.Module:
    _need_features(cfg, target)
    return mlp(math.prod(target.input_shape), cfg.hidden, target.num_classes)


def _cnn(cfg: ModelConfig, target: Target) -> nn.Module:
    _need_features(cfg, target)
    shape = target.input_shape
    if len(shape) != 3:
        side = math.isqrt(math.prod(shape))
        example = [1, side, side] if side * side == math.prod(shape) else [1, 8, 8]
        raise ModelError(
            f"{target.where}.kind: 'cnn' needs C x H x W inputs, the data's examples have "
            f"shape {shape}; set data.shape, e.g. {example}"
        )
    return cnn(shape, cfg.channels, target.num_classes)


def _transformer(cfg: ModelConfig, target: Target) -> nn.Module:
    where, shape = target.where, target.input_shape
    if target.vocab_size is None:
        raise ModelError(
            f"{where}.kind: 'transformer' takes token ids, the data's examples are float "
            f"features of shape {shape}; use kind 'mlp', 'cnn', 'hf' or 'module'"
        )
    if len(shape) != 1:
        raise ModelError(
            f"{where}.kind: 'transformer' needs 1-D token sequences, the data's examples have "
            f"shape {shape}"
        )
    if cfg.max_length < shape[0]:
        raise ModelError(f"{where}.max_length: {cfg.max_length} is shorter than {_seen(target)}")
    return TokenTransformer(
        vocab_size=target.vocab_size,
        num_outputs=target.num_classes,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        max_length=cfg.max_length,
        dropout=cfg.dropout,
        causal=target.task == "causal_lm",
        pool=target.task == "classify",
        pad_id=target.pad_id,
    )


def _module(cfg: ModelConfig, target: Target) -> nn.Module:
    assert cfg.factory is not None  # ModelConfig requires it for kind 'module'
    model = from_factory(cfg.factory, cfg.kwargs, where=target.where)
    return LogitsAdapter(model, num_logits=_num_logits(target))


def _hf(cfg: ModelConfig, target: Target) -> nn.Module:
    if cfg.path is not None:
        model = from_path(cfg.path, vocab_size=target.vocab_size, where=target.where)
    else:
        assert cfg.architecture is not None  # ModelConfig requires one of the two
        model = from_architecture(
            cfg.architecture,
            cfg.config,
            task=target.task,
            num_classes=target.num_classes,
            vocab_size=target.vocab_size,
            where=target.where,
        )
    if target.tokens:
        check_positions(model, target.input_shape[0], where=target.where)
    return HFAdapter(
        model, tokens=target.tokens, pad_id=target.pad_id, num_logits=_num_logits(target)
    )


_BUILDERS: dict[str, Callable[[ModelConfig, Target], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "transformer": _transformer, "module": _module, "hf": _hf,
}  # fmt: skip


def _need_features(cfg: ModelConfig, target: Target) -> None:
    if target.tokens:
        raise ModelError(
            f"{target.where}.kind: {cfg.kind!r} takes float features, the data's examples are "
            "token-id sequences; use kind 'transformer', 'hf' or 'module'"
        )


def _num_logits(target: Target) -> int | None:
    """How many logits per token an adapter keeps (LM tasks), else None."""
    return target.num_classes if target.task in LM_TASKS else None


def _seen(target: Target) -> str:
    """'the data's sequences (256 tokens)', saying what a causal model sees of them."""
    length = target.input_shape[0]
    if target.task == "causal_lm":
        return f"the data's sequences ({length + 1} tokens, of which the model sees {length})"
    return f"the data's sequences ({length} tokens)"


def dummy_batch(target: Target) -> torch.Tensor:
    """:data:`DRY_BATCH` examples of zeros; for token ids, the first example holds id 0 (or 1
    where 0 is the padding id) and the second ends with the largest ids the engine feeds: the
    data's last token ``V - 1``, the padding id and, for masked LM, the mask id ``V + 1``. A
    model whose embedding is too small for them fails here, not in a trial."""
    shape = (DRY_BATCH, *target.input_shape)
    if not target.tokens:
        return torch.zeros(shape)
    batch = torch.full(shape, 1 if target.pad_id == 0 else 0, dtype=torch.long)
    vocab = target.vocab_size
    largest = [vocab - 1]
    if target.pad_id is not None:
        largest.append(target.pad_id)
    if target.task == "masked_lm":
        largest.append(vocab + 1)
    ids = sorted(set(largest))[-shape[1] :]  # on the second example's last positions
    batch[1, shape[1] - len(ids) :] = torch.tensor(ids)
    return batch


def _largest_id(target: Target) -> int:
    return int(dummy_batch(target).max())


def check_output(model: nn.Module, target: Target) -> None:
    """Run ``model`` once (CPU, eval mode, no grad; its mode restored after) and check the
    output's shape against the task's, naming both sizes when they differ."""
    where = target.where
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(dummy_batch(target))
    except ModelError:
        raise
    except OutputError as e:
        raise ModelError(f"{where}: {e}") from e
    except IndexError as e:
        if not target.tokens:
            raise ModelError(f"{where}: the model cannot take inputs: {describe(e)}") from e
        fed = [f"the data's tokens 0..{target.vocab_size - 1}"]
        fed += [f"the padding id {target.pad_id}"] if target.pad_id is not None else []
        fed += [f"the mask id {target.vocab_size + 1}"] if target.task == "masked_lm" else []
        raise ModelError(
            f"{where}: the model cannot take token ids up to {_largest_id(target)} "
            f"({', '.join(fed)}): {describe(e)}"
        ) from e
    except Exception as e:
        raise ModelError(
            f"{where}: the model cannot take inputs of shape {target.input_shape}: {describe(e)}"
        ) from e
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{where}: the model returned {type(out).__name__}, not a tensor")
    _check_shape(tuple(out.shape), target)


def _check_shape(shape: tuple[int, ...], target: Target) -> None:
    expected = target.expected
    if shape == expected:
        return
    where, n = target.where, target.num_classes
    if len(shape) == len(expected) and shape[:-1] == expected[:-1]:
        if target.task in LM_TASKS:
            raise ModelError(
                f"{where}: the model outputs {shape[-1]} logits per token, the vocabulary has {n}"
            )
        raise ModelError(
            f"{where}: the model outputs {shape[-1]} classes per example, the data has {n}"
        )
    raise ModelError(
        f"{where}: the model's output for a batch of {DRY_BATCH} examples of shape "
        f"{target.input_shape} has shape {shape}; task {target.task!r} needs {expected}"
    )
