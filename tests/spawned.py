"""The end of a process that a test started with ``torch.multiprocessing.spawn``.

Such a test failed about once in twenty runs here, after its workers had written every result: one process
aborted at exit (``terminate called without an active exception``, SIGABRT). A core dump of the abort shows
why. The interpreter was shutting down while a gloo worker thread released the last barrier, and with it an
all-reduce whose saved thread-local state holds a Python object (backward stashes one there, so this is DDP's
gradient all-reduce). Dropping that object needs the GIL; a thread that asks for the GIL during shutdown is
ended, and ending it inside a C++ destructor aborts the process. PyTorch's guard checks ``Py_IsInitialized``
but not finalization (pytorch/pytorch#190489), and the group's threads outlive ``destroy_process_group``.

A worker that has finished its work and left its group therefore ends with :func:`leave`, which skips the
interpreter's shutdown. A worker that raises never gets there, so spawn still reports its traceback.
"""

from __future__ import annotations

import os
import sys


def leave() -> None:
    """End this spawned process with status 0 at once, without the interpreter's shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
