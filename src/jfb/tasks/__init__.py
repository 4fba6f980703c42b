"""Named inverse problems: forward model (operator, noise) + training/evaluation data.

A :class:`Task` says how measurements are made, ``y = A x + n`` with ``n ~ N(0, sigma^2)``, and
on which images; it holds its operator, kernel and data specs parsed (:mod:`jfb.specs`, where
their syntax is documented). The registry (:data:`TASKS`) holds the protocol's deblurring tasks
(``celeba-gauss5``, ``celeba-motion``, ``natural-gauss5``), ``demo``, and denoising,
super-resolution, inpainting and tomography tasks on CelebA-128; :func:`parse_task` builds
user-defined ones from a string such as
``"kernel=gaussian:7:2.0,noise=0.01,padding=circular,data=/path/to/images"`` or
``"op=sr:4,noise=0.01,data=celeba128"``; in a task spec, ``train=none`` says that the task has no
training images (what :meth:`Task.to_spec` writes for ``train_data=None``).

Modules: :mod:`jfb.tasks.task` (the value), :mod:`jfb.tasks.registry` (names and task specs).
"""

from jfb.data.open import open_dataset
from jfb.specs import OPERATORS
from jfb.tasks.registry import SPEC_KEYS, TASKS, get_task, list_tasks, parse_task
from jfb.tasks.task import NO_TRAIN, Task

#: The keys of a task spec (read by scripts/fuzz.py under this older name).
_KEYS = SPEC_KEYS

__all__ = ["NO_TRAIN", "OPERATORS", "SPEC_KEYS", "TASKS", "Task", "get_task", "list_tasks",
           "open_dataset", "parse_task"]
