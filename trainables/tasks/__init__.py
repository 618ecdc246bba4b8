"""Tasks: how a batch of examples becomes the model's inputs and the targets it is scored on
(plain NumPy; no Ray, no torch)."""

from trainables.tasks._task import IGNORE, Task, check_task_fits, make_task

__all__ = ["IGNORE", "Task", "check_task_fits", "make_task"]
