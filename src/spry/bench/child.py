"""One mode measured in this process: build the model and a batch, time the client steps.

The parent (spry.bench.parent) runs this in a fresh interpreter per mode,
`python -m spry.bench --child SPEC`, and reads back the JSON line it prints.
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import time
from dataclasses import asdict

from spry.bench.modes import MODES, ModeResult, mode_config, parse_mode

# Randomly initialised configs of public architectures, by size (no download: the shapes
# are copied from the hub config.json of the named model).
RANDOM_CONFIGS = {
    "opt-350m": ("opt", dict(vocab_size=50272, hidden_size=1024, num_hidden_layers=24,
                             ffn_dim=4096, num_attention_heads=16, max_position_embeddings=2048,
                             word_embed_proj_dim=512, do_layer_norm_before=False,
                             pad_token_id=1)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                                   intermediate_size=1536, num_attention_heads=9,
                                   num_key_value_heads=3, max_position_embeddings=8192,
                                   tie_word_embeddings=True, pad_token_id=0)),
    "llama-1b": ("llama", dict(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                               intermediate_size=8192, num_attention_heads=32,
                               num_key_value_heads=8, max_position_embeddings=8192,
                               tie_word_embeddings=True, pad_token_id=0)),
    "tiny-bert": ("bert", dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=128)),
}
RANDOM_PREFIX = "random:"
MIB = 2 ** 20


def build_model(cfg):
    """The client's model: `load_model`, or a random-init config for `random:<name>`."""
    from spry.models import apply_peft, head_module_names
    from spry.tasks.heads import load_model

    if not cfg.model.startswith(RANDOM_PREFIX):
        return load_model(cfg, num_labels=2, pad_token_id=None)
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = cfg.model.removeprefix(RANDOM_PREFIX)
    if name not in RANDOM_CONFIGS:
        raise ValueError(f"model: no random config {name!r}; one of {', '.join(RANDOM_CONFIGS)}")
    model_type, shape = RANDOM_CONFIGS[name]
    config = AutoConfig.for_model(model_type, num_labels=2, **shape)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", dtype=getattr(torch, cfg.dtype))
    # A sequence classifier: its head modules train in full, as task_head=classifier's do.
    heads = head_module_names(model) if cfg.task_head == "classifier" else []
    return apply_peft(model, cfg, heads=heads).to(cfg.device)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset: bool) -> float:
    if reset:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_mode(mode: str, overrides: list[str], steps: int, warmup: int,
             threads: int | None = None, allocator: str = "glibc",
             config: str | None = None) -> ModeResult:
    """Build the model and one batch, then time `warmup + steps` client steps of `mode`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    name, k = parse_mode(mode)
    method, which = MODES[name]
    cfg = mode_config(mode, overrides, config)
    result = ModeResult(mode=mode, method=method, tangents=k, allocator=allocator,
                        device=cfg.device, threads=torch.get_num_threads())
    torch.manual_seed(cfg.seed)  # the bench owns its process: LoRA init and dropout
    model = build_model(cfg)
    params = _trained_params(model, cfg, which, result)
    step = _client_step(model, cfg, params, method is None, k)
    _measure(step, cfg.device.startswith("cuda"), warmup, steps, result)
    return result


def _trained_params(model, cfg, which: str, result: ModeResult) -> dict:
    """The tensors the mode trains (`which`: none, all units, or client 0's share), with
    their counts written into `result`."""
    from spry.federation.assign import assign_units
    from spry.models import list_units

    named = dict(model.named_parameters())
    units = list_units(model)
    if which == "share":
        dealt = assign_units([u.name for u in units], list(range(cfg.clients_per_round)), 0)
        units = [u for u in units if u.name in dealt[0]]
    params = {} if which == "none" else {p: named[p] for u in units for p in u.params}
    result.units = 0 if which == "none" else len(units)
    result.trained_params = sum(p.numel() for p in params.values())
    result.model_params = sum(p.numel() for p in model.parameters())
    return params


def random_batch(cfg, vocab_size: int) -> dict:
    """The bench's seeded batch: batch_size rows of max_length random token ids (no
    padding) and random binary labels, on cfg.device."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    batch = {"input_ids": torch.randint(5, vocab_size, (cfg.batch_size, cfg.max_length),
                                        generator=g),
             "attention_mask": torch.ones(cfg.batch_size, cfg.max_length, dtype=torch.long),
             "labels": torch.randint(0, 2, (cfg.batch_size,), generator=g)}
    return {key: v.to(cfg.device) for key, v in batch.items()}


def _client_step(model, cfg, params: dict, inference: bool, k: int):
    """`step(i)`: what a client does per minibatch on one seeded random batch, the estimator
    and the optimizer step; for inference one no-grad forward with the loss."""
    import torch

    from spry.client import classification_loss, exact_head, make_client_optimizer, step_estimate
    from spry.methods import make_estimator

    batch = random_batch(cfg, model.config.vocab_size)
    loss_fn = classification_loss(model, batch)

    if inference:
        model.eval()

        def step(i: int) -> None:
            with torch.no_grad():
                loss_fn({})
        return step
    model.train(cfg.train_dropout)  # as a run's client trains
    estimator = make_estimator(cfg)
    # The client's own step (spry.client.step_estimate): the recipe's head treatment,
    # tangent sharing and zero-factor rule are measured as a run uses them.
    head = exact_head(model, cfg, list(params))
    optimizer = make_client_optimizer(
        cfg, [p for n, p in params.items() if n not in (head or ())],
        [p for n, p in params.items() if n in (head or ())])

    def step(i: int) -> None:
        est = step_estimate(model, batch, params, head, cfg, estimator,
                            [1000 * i + j for j in range(k)])
        for pname, p in params.items():
            p.grad = est.grads[pname].to(p.dtype) if pname in est.grads else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _measure(step, cuda: bool, warmup: int, steps: int, result: ModeResult) -> None:
    """Run `warmup` untimed and `steps` timed steps; write the times and the peak memory
    above the loaded state into `result`."""
    import torch

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        result.loaded_mib = torch.cuda.memory_allocated() / MIB
        torch.cuda.reset_peak_memory_stats()
        result.peak_method = "cuda max_memory_allocated"
    else:
        result.loaded_mib = _rss_mib()
        reset = _reset_peak_rss()
        result.peak_method = "VmHWM after reset" if reset else "ru_maxrss (includes loading)"
    for i in range(warmup + steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step(i)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            result.step_seconds.append(time.perf_counter() - wall)
            result.cpu_seconds.append(time.process_time() - cpu)
    peak = (torch.cuda.max_memory_allocated() / MIB if cuda else _peak_rss_mib(reset))
    result.peak_mib = max(0.0, peak - result.loaded_mib)
    result.median_step_seconds = statistics.median(result.step_seconds)
    result.median_cpu_seconds = statistics.median(result.cpu_seconds)


def child(spec: str) -> int:
    """`python -m spry.bench --child SPEC`: run the mode SPEC names, print its JSON row."""
    s = json.loads(spec)
    r = run_mode(s["mode"], s["overrides"], s["steps"], s["warmup"], s.get("threads"),
                 s.get("allocator", "glibc"), s.get("config"))
    print(json.dumps(asdict(r)), flush=True)
    return 0
