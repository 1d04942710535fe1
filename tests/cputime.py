"""CPU time, for the tests and the fuzz harness that bound how long a scan may take.

CPU rather than wall time: a loaded or paused machine must not turn a fast scan into a failure.
Children count once they have been waited for (the HDF5 reader's fork, a CLI child process).
"""

from __future__ import annotations

import os


def cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def children_cpu_seconds() -> float:
    """CPU seconds of the children this process has waited for."""
    t = os.times()
    return t.children_user + t.children_system
