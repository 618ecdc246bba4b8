"""Models (plain PyTorch, plus Hugging Face ``transformers`` for ``kind: hf``).

:func:`build_model` turns a ``ModelConfig`` into a module for the data and the task;
:func:`mlp` is the plain perceptron the first loops used (its parameter names are stable).
"""

from trainables.models._adapter import HFAdapter, LogitsAdapter
from trainables.models._build import build_model
from trainables.models._cnn import ResidualCNN
from trainables.models._errors import ModelError
from trainables.models._mlp import mlp
from trainables.models._transformer import TokenTransformer

__all__ = [
    "HFAdapter",
    "LogitsAdapter",
    "ModelError",
    "ResidualCNN",
    "TokenTransformer",
    "build_model",
    "mlp",
]
