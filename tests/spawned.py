"""The end of a process that a test started with ``torch.multiprocessing.spawn``.

A gloo worker thread can still be releasing the last collective's work when the interpreter starts to shut
down. If that work was made during a backward pass (DDP's gradient all-reduce, held on by the barrier that
followed it), releasing it needs the GIL, and a thread that asks for the GIL during shutdown is ended in a
way that aborts the process: ``terminate called without an active exception``, SIGABRT, a failed test after
the worker had written every result. A core dump of that abort here showed exactly this stack (PyTorch's
decref guard checks ``Py_IsInitialized`` but not finalization; pytorch/pytorch#190489). A worker that has
finished its work and left its process group therefore ends with :func:`leave`, which skips the interpreter's
shutdown. A worker that raises never gets there, so spawn still reports its traceback.
"""

from __future__ import annotations

import os
import sys


def leave() -> None:
    """End this spawned process with status 0 at once, without the interpreter's shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
