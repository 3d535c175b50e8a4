"""`spry bench`: peak memory and step time of one client step, per method.

Each mode runs in a FRESH subprocess (`python -m spry.bench --child SPEC`), so one mode's
allocator state and peak never leak into another's. The parent collects one JSON object
per mode and draws a table with ratios to no-grad inference.

Memory. CPU: peak resident set size (VmHWM) above the RSS right after the model, batch and
optimizer are built; the high-water mark is reset after loading (`/proc/self/clear_refs`)
so loading's own transient peak is not counted (falls back to `ru_maxrss` where the reset
is not possible; `peak_method` says which). glibc's allocator keeps freed pages resident
and inflates RSS, so the parent can also run every mode under jemalloc (LD_PRELOAD).
GPU: `torch.cuda.max_memory_allocated` above the memory allocated after loading.

Time. The median over `steps` timed steps after `warmup` untimed ones; a step is what a
client does per minibatch: the estimator plus the optimizer step (inference: one no-grad
forward with the loss). Process CPU time is reported too: on a shared machine it is less
disturbed by other processes than wall time.

Modes: inference, backprop (all trainable weights), spry (forward gradient, all units),
spry_share (one client's share of the units: client 0 of `clients_per_round`), and the
zeroth-order baselines fedmezo, baffle, fwdllm when their estimators are registered.
`name:K` sets K (tangents / perturbations), e.g. `spry:10`. The modes come from the
methods table (spry.methods.METHODS, bench_modes).

The parts: modes (the modes and a mode's result row), child (one mode measured in its
process), parent (the processes and the report), report (ratios, targets, the table).
"""

from spry.bench.child import MIB, RANDOM_CONFIGS, RANDOM_PREFIX, build_model, run_mode
from spry.bench.modes import DEFAULT_MODES, MODES, ModeResult, mode_available, parse_mode
from spry.bench.parent import bench, cli_bench, jemalloc_path, spawn
from spry.bench.report import TARGETS, ratios, table, targets

__all__ = ["DEFAULT_MODES", "MIB", "MODES", "RANDOM_CONFIGS", "RANDOM_PREFIX", "TARGETS",
           "ModeResult", "bench", "build_model", "cli_bench", "jemalloc_path",
           "mode_available", "parse_mode", "ratios", "run_mode", "spawn", "table", "targets"]
