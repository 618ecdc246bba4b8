"""``kind: hf``: a Hugging Face ``transformers`` model, built with random weights from an
architecture name and config fields, or loaded from a local ``save_pretrained`` directory.

``transformers`` is imported here, lazily (the ``[hf]`` extra); nothing is ever downloaded:
a named architecture is built from its config class, a path is read with
``local_files_only=True``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import nn

from trainables.models._errors import ModelError, describe

# config attributes that bound a model's sequence length (GPT-2 maps n_positions onto the first)
_POSITION_LIMITS = ("max_position_embeddings", "n_positions")


def import_transformers(where: str) -> ModuleType:
    """The ``transformers`` package, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError as e:
        raise ModelError(
            f"{where}.kind: 'hf' needs the transformers package: "
            "pip install 'kd-schedule-search[hf]'"
        ) from e
    return transformers


def model_class(transformers: ModuleType, name: str, *, field: str) -> type:
    """The ``transformers`` model class called ``name`` (e.g. ``BertForMaskedLM``)."""
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelError(
            f"{field}: {name!r} is not a transformers model class "
            "(e.g. BertForMaskedLM, GPT2LMHeadModel, BertForSequenceClassification)"
        )
    return cls


def from_architecture(
    architecture: str,
    fields: Mapping[str, Any],
    *,
    task: str,
    num_classes: int,
    vocab_size: int | None,
    where: str,
) -> nn.Module:
    """A randomly initialised ``architecture`` built from its config class with ``fields``.

    Token data: ``vocab_size`` defaults to ``V + 2`` (the data's tokens, padding and mask ids)
    and may not be smaller. ``classify``: ``num_labels`` defaults to ``num_classes``.
    """
    transformers = import_transformers(where)
    cls = model_class(transformers, architecture, field=f"{where}.architecture")
    defaults = _defaults(cls.config_class, where)
    _check_fields(fields, defaults, cls.config_class, where)
    fields = dict(fields)
    if vocab_size is not None:
        fields.setdefault("vocab_size", vocab_size + 2)
        check_vocab(fields["vocab_size"], vocab_size, field=f"{where}.config.vocab_size")
        for name in _SPECIAL_TOKENS:  # e.g. GPT-2's 50256, outside a small vocabulary
            default = defaults.get(name)
            if name not in fields and isinstance(default, int) and default >= fields["vocab_size"]:
                fields[name] = None
    if task == "classify":
        fields.setdefault("num_labels", num_classes)
    try:
        config = cls.config_class(**fields)
        return cls(config)
    except Exception as e:
        raise ModelError(
            f"{where}.config: cannot build {architecture} from {fields!r}: {describe(e)}"
        ) from e


_SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _defaults(config_class: Any, where: str) -> dict[str, Any]:
    try:
        return config_class().to_dict()
    except Exception as e:  # a config class that needs arguments: its fields stay unchecked
        del e
        return {}


def _check_fields(
    fields: Mapping[str, Any], defaults: dict[str, Any], config_class: Any, where: str
) -> None:
    """Refuse a ``config`` key that is not a field of the architecture's config class: a
    config accepts any keyword silently, so a typo (``n_layers``) would build the default."""
    if not defaults:
        return
    known = set(defaults) | set(getattr(config_class, "attribute_map", {}))
    for key in fields:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ModelError(f"{where}.config.{key}: not a field of {config_class.__name__}{hint}")


def from_path(path: str, *, vocab_size: int | None, where: str) -> nn.Module:
    """The model saved in the local directory ``path``, of class ``config.architectures[0]``,
    in training mode (``from_pretrained`` returns it in eval mode)."""
    transformers = import_transformers(where)
    field = f"{where}.path"
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise ModelError(f"{field}: cannot read a model config in {path!r}: {describe(e)}") from e
    names = getattr(config, "architectures", None) or []
    if not names:
        raise ModelError(f"{field}: the config in {path!r} names no architectures")
    cls = model_class(transformers, names[0], field=field)
    if vocab_size is not None:
        check_vocab(getattr(config, "vocab_size", vocab_size + 2), vocab_size, field=field)
    try:
        model = cls.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise ModelError(f"{field}: cannot load {names[0]} from {path!r}: {describe(e)}") from e
    return model.train()


def check_vocab(given: int, vocab_size: int, *, field: str) -> None:
    """Token models take ids ``0 .. V + 1``: refuse an embedding with fewer rows."""
    if given < vocab_size + 2:
        raise ModelError(
            f"{field}: the model's vocab_size {given} is smaller than the {vocab_size + 2} "
            f"token ids it is fed (the data's {vocab_size} tokens, padding and mask ids)"
        )


def check_positions(model: nn.Module, length: int, *, where: str) -> None:
    """Refuse a model whose position table is shorter than the sequences it will see."""
    config = getattr(model, "config", None)
    for name in _POSITION_LIMITS:
        limit = getattr(config, name, None)
        if isinstance(limit, int) and limit < length:
            raise ModelError(
                f"{where}.config.{name}: {limit} is shorter than the data's sequences "
                f"({length} tokens)"
            )
        if isinstance(limit, int):
            return
