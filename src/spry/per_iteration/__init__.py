"""communication=per_iteration: the server that steps once per local step (server), the
in-process engine whose clients step in lockstep (engine), and the seed-and-scalar
messages both sides replay (replay)."""

from spry.per_iteration.engine import LocalStepEngine
from spry.per_iteration.server import PerIterationServer

__all__ = ["LocalStepEngine", "PerIterationServer"]
