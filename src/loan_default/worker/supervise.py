"""How `loan-default run` starts its children (API, worker, private Redis): each in a process
group of its own, and tied to the life of `run`.

Own process group: a terminal's Ctrl-C signals the whole foreground process group. With the
children in it, each got SIGINT twice, once from the terminal and once forwarded by `run`.
Uvicorn takes a second SIGINT as "force exit" and skips the lifespan shutdown (the decision
writer child is not closed and a CancelledError traceback is logged), Celery as "cold shutdown"
(running chunks are abandoned), and redis-server stopped at once, under a worker still
acknowledging its tasks. In groups of their own they get exactly one signal, from `run`, in
its order: API and worker first, Redis after both have exited.

Parent-death signal (Linux): a `run` killed by SIGKILL forwards nothing; the kernel then sends
SIGTERM to each child, so no API is left holding the port and no worker the queue.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

#: prctl(2) option: the signal the calling process gets when its parent thread dies.
PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    """libc's `prctl`, looked up in the parent: the child runs only the call, after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def child_options() -> dict[str, Any]:
    """Keyword arguments for `subprocess.Popen` of one of `run`'s children (see the module)."""
    prctl = _prctl()
    if prctl is None:
        return {"process_group": 0}
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: nobody would signal
            os._exit(1)

    return {"process_group": 0, "preexec_fn": die_with_parent}
