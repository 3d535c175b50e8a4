"""Pure server-side algorithm: who trains what, how pieces are put back, how the server steps."""

from spry.federation.aggregate import aggregate_units
from spry.federation.assign import assign_units
from spry.federation.server_optimizer import ServerOptimizer, make_server_optimizer

__all__ = ["ServerOptimizer", "aggregate_units", "assign_units", "make_server_optimizer"]
