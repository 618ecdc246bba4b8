"""``kind: module``: a user's factory ``"package.module:function"`` returning an ``nn.Module``.

The factory is imported where the model is built, i.e. on the Ray worker that runs the
trial, so its package must be importable there; every way the factory can fail is one
line naming ``<where>.factory`` and the value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from trainables.models._errors import ModelError, describe, first_line


def load_factory(factory: str, *, where: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:function"`` (the attribute may be dotted,
    ``module:Class.build``)."""
    field = f"{where}.factory"
    module_name, colon, attribute = factory.partition(":")
    if not colon or not module_name or not attribute:
        raise ModelError(
            f"{field}: {factory!r} is not of the form 'package.module:function' "
            "(a module path, a colon, a callable's name)"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or anything the module raises on import
        raise ModelError(
            f"{field}: cannot import {factory!r} ({type(e).__name__}: {first_line(e)}); "
            "the factory is imported on the worker that runs the trial, so its package must "
            "be importable there (installed, or shipped with the job's runtime_env)"
        ) from e
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ModelError(f"{field}: {factory!r}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, name)
    if not callable(target):
        raise ModelError(
            f"{field}: {factory!r} is a {type(target).__name__}, not a callable returning "
            "an nn.Module"
        )
    return target


def from_factory(factory: str, kwargs: Mapping[str, Any], *, where: str) -> nn.Module:
    """Call the factory with ``**kwargs``; its return value must be an ``nn.Module``."""
    build = load_factory(factory, where=where)
    try:
        model = build(**kwargs)
    except Exception as e:
        raise ModelError(
            f"{where}.factory: {factory!r} raised {describe(e)} "
            f"(called with {where}.kwargs {dict(kwargs)!r})"
        ) from e
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{where}.factory: {factory!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model
