"""Training loops for one worker, as generators of evaluation records (plain PyTorch).

The Ray entry points (:mod:`trainables.teacher`, :mod:`trainables.student`) iterate these and
report each record; nothing here imports Ray.
"""

from trainables.loops._repeats import repeated_loop
from trainables.loops._student import student_loop
from trainables.loops._teacher import teacher_loop

__all__ = ["repeated_loop", "student_loop", "teacher_loop"]
