"""Checking a sweep's inputs before anything starts: the data (:func:`check_data`) and then
each model against it (:func:`build_model`: a model is built once on the CPU and given a
dummy batch, so a factory that does not import, a sequence longer than a transformer's
``max_length``, an image shape a network cannot take, or outputs that do not match the data's
classes or vocabulary stop the sweep here, in one line, instead of in a trial)."""

from __future__ import annotations

from trainables.data import DataError, DataInfo, check_data
from trainables.models import ModelError, build_model

__all__ = ["InputError", "check_inputs"]

InputError = (DataError, ModelError)  # what check_inputs raises: bad data or a bad model


def check_inputs(spec, *, own_code: bool = True) -> DataInfo | None:
    """Check ``spec``'s data, then its teacher's and student's models against that data;
    raise :class:`DataError` or :class:`ModelError` (one line naming the field).

    ``own_code=False`` (``submit``) leaves out the models built from code that may exist only
    on the cluster (``module`` factories, ``hf``): the job's own ``run`` checks them there."""
    if not own_code and spec.data.kind == "module":
        return None  # the data itself comes from such code
    info = check_data(spec.data)
    for role in ("teacher", "student"):
        model = getattr(spec, role).model
        if not own_code and model.kind in ("module", "hf"):
            continue
        build_model(
            model, task=spec.task.kind, example_shape=tuple(info.example_shape),
            num_classes=info.num_classes, vocab_size=info.vocab_size, pad_id=info.pad_id,
            where=f"{role}.model",
        )  # fmt: skip
    return info
