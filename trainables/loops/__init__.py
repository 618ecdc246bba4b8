"""Training loops for one worker, as generators of evaluation records (plain PyTorch).

The Ray entry points (:mod:`trainables.teacher`, :mod:`trainables.student`) iterate these and
report each record; nothing here imports Ray. A student run is built once
(:func:`build_student`, a :class:`StudentRun`) and advanced by :func:`train_step`.
"""

from trainables.loops._build import StudentRun, build_student
from trainables.loops._repeats import repeated_loop
from trainables.loops._student import evaluate_run, student_loop, train_step
from trainables.loops._teacher import checkpoint_steps, teacher_loop

__all__ = [
    "StudentRun",
    "build_student",
    "checkpoint_steps",
    "evaluate_run",
    "repeated_loop",
    "student_loop",
    "teacher_loop",
    "train_step",
]
