"""Tasks: how a batch of examples becomes the model's inputs and the targets it is scored on
(plain NumPy; no Ray, no torch)."""

from trainables.tasks._task import IGNORE, Task, make_task

__all__ = ["IGNORE", "Task", "make_task"]
