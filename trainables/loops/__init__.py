"""Training loops for one worker, as generators of evaluation records (plain PyTorch).

The Ray entry points (:mod:`trainables.teacher`, :mod:`trainables.student`) iterate these and
report each record; nothing here imports Ray. A student run is built once
(:func:`build_student`, a :class:`StudentRun`) and advanced by :func:`train_step`.

Validation is for selection only: no training-time decision reads the validation split. An
audit of every place a loop evaluates on it, and what it does with the result:

- RHO-LOSS's irreducible-loss model (``curriculum.kind: rho``): fit on a holdout carved
  from the training split (``curriculum.rho_holdout_fraction``, or the data's ``holdout``
  rows), which the student's candidate pool excludes. It used to be fit on the validation
  split, which leaked it into every batch RHO picked (a RHO trial's validation accuracy came
  out above the best achievable, its test accuracy far lower).
- The staged curriculum's stage gate (``progression: threshold`` / ``plateau``): measures the
  stage's accuracy on a holdout carved from the training split
  (``curriculum.gate_holdout_fraction``), excluded from the pool, its bands ranked in the
  curriculum's own order; it used to read the validation accuracy of the stage's band.
  ``progression: fixed`` reads no accuracy and holds nothing out.
- Temperature and alpha schedules: functions of progress and stage only (``stage`` kinds
  follow the gate above); CTKD's learned temperature and the confidence sampler's
  running student confidence learn from training batches. None reads the validation split.
- The teacher's phase transition, which picks the checkpoint a ``two_shot`` student learns
  from: detected on the teacher's accuracy over training rows (a holdout it does not train
  on with ``teacher.transition_holdout_fraction`` or the data's ``holdout`` rows, else its
  training split), no longer on its validation accuracy. The teacher always banks its final
  step, never a validation-best one.
- ``steps_to_target``, ``best_val_accuracy``, ``easy_accuracy`` / ``hard_accuracy`` and
  ``teacher_agreement``: reported metrics, what the search selects on; no step of the run
  depends on them.
- ``stop_at_target`` (off by default): ends a run at its first evaluation whose validation
  accuracy reaches ``target_accuracy``. Kept on validation on purpose: it is early stopping
  tied to the selection metric itself. ``steps_to_target`` is already fixed when it stops,
  so stopping saves compute without changing what is selected on; the final
  ``val_accuracy`` of a stopped run is at least the target by construction (biased upward,
  like any early-stopped validation score), and ``test_accuracy`` is the unbiased one.
- The scheduler's pruning (ASHA, median) and PBT's exploit (copying a better trial's
  weights) act on reported validation metrics: they are the search, i.e. selection, done by
  Tune between trials, not a decision inside a trial's training; as with any selection, the
  winners' validation accuracy is optimistic and their ``test_accuracy`` is not.
"""

from trainables.loops._build import StudentRun, build_student
from trainables.loops._repeats import is_last, repeated_loop
from trainables.loops._setup import carve_holdout, missing_transition, student_holdout
from trainables.loops._student import evaluate_run, student_loop, train_step
from trainables.loops._teacher import checkpoint_steps, teacher_loop

__all__ = [
    "StudentRun",
    "build_student",
    "carve_holdout",
    "checkpoint_steps",
    "evaluate_run",
    "is_last",
    "missing_transition",
    "repeated_loop",
    "student_holdout",
    "student_loop",
    "teacher_loop",
    "train_step",
]
