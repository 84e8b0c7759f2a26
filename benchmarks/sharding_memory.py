"""Memory of the training state per rank under FSDP, against world size and model size, and the largest
GPT a per-rank memory budget holds.

For each GPT shape and each world size N, N ranks on this machine (gloo, CPU) build the model, shard it
with chainrule's own `parallelize` (FSDP over N ranks, fp32), take one AdamW step on a random batch, and
count what each rank holds (chainrule.optim.memory.state_bytes): parameters, gradients, optimizer state.
The first table gives the largest rank's bytes and the ratio to one rank, all measured in this run. From
the measured bytes per parameter per rank of the largest shape, the second table gives the largest
GPT-2-shaped model (GPT-2's widths and depths, 50,257-token vocabulary, 1,024 positions) whose training
state fits `--budget-gib` per rank. Activations are not state (they depend on batch and sequence); leave
room for them, or measure them with the GPU preset.

The GPU preset compares, on one GPU, a GPT of 350M parameters at sequence length 1024 under FSDP (bf16
compute with fp32 state, and with activation checkpointing) against DDP (bf16 autocast): peak memory,
state bytes, step time. `run_gpu_preset()` is the function a script calls; `--dry-run` runs the same
code on the CPU at a tiny size (the suite does), and checks the real shape's parameter count.

    python -m benchmarks.sharding_memory --preset tiny --no-record   # seconds; the suite runs it
    python -m benchmarks.sharding_memory --preset cpu                # ~1 min on 2 cores
    python -m benchmarks.sharding_memory --preset gpu                # one GPU, a few minutes
    python -m benchmarks.sharding_memory --preset gpu --dry-run      # the GPU path on the CPU, tiny
"""

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch.nn import functional as F

from chainrule.models.gpt import GPT
from chainrule.optim.memory import StateBytes, human, state_bytes
from chainrule.optim.param_groups import build_optimizer

GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    """A GPT's shape; `vocab` tokens, `seq` positions."""

    n_layer: int
    n_head: int
    n_embd: int
    vocab: int
    seq: int

    def build(self) -> GPT:
        return GPT((self.seq,), self.vocab, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                   dropout=0.0, bias=False)

    def parameters(self) -> int:
        """Parameters (tied embedding once), counted on the meta device: no memory, any size."""
        with torch.device("meta"):
            return sum(p.numel() for p in self.build().parameters())

    @property
    def name(self) -> str:
        return f"GPT {self.n_layer}x{self.n_embd}"


# GPT-2's shapes (small, medium, large, XL) and larger ones of the same family: the budget table's candidates.
GPT2_VOCAB, GPT2_SEQ = 50257, 1024
CANDIDATES = [Shape(layers, heads, width, GPT2_VOCAB, GPT2_SEQ) for layers, heads, width in
              ((12, 12, 768), (24, 16, 1024), (36, 20, 1280), (48, 25, 1600), (32, 32, 2560), (32, 32, 4096),
               (40, 40, 5120), (48, 48, 6144), (80, 64, 8192))]
PRESETS: dict[str, tuple[list[Shape], list[int]]] = {
    "tiny": ([Shape(2, 4, 64, 256, 32)], [1, 2, 4]),
    "cpu": ([Shape(2, 4, 128, 1024, 64), Shape(4, 8, 256, 1024, 64)], [1, 2, 4]),
}
GPU_SHAPE = Shape(24, 16, 1024, 50304, 1024)  # GPT-2 medium (vocabulary padded to a multiple of 64): 355M
DRY_RUN_SHAPE = Shape(2, 4, 64, 256, 32)


# --- running a function on N ranks -------------------------------------------------------------------
def on_ranks(fn: Callable[..., Any], world: int, backend: str, *args: Any) -> list[Any]:
    """`fn(rank, world, *args)` on `world` fresh processes in one process group; their results by rank."""
    from chainrule.launch.local_ranks import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_rank_main, args=(fn, world, backend, port, folder, args), nprocs=world,
                           start_method="spawn")
        return [torch.load(Path(folder) / f"{rank}.pt", weights_only=False) for rank in range(world)]


def _rank_main(rank: int, fn: Callable[..., Any], world: int, backend: str, port: int, folder: str,
               args: tuple) -> None:
    import torch.distributed as dist

    if backend == "gloo":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    else:  # NCCL: one GPU per rank, chosen before the process group exists
        torch.cuda.set_device(rank)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world, *args), Path(folder) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def _mesh(world: int, device: str, shards: int | None = None):
    """The mesh chainrule's strategy builds (data_parallel x tensor_parallel), FSDP over `shards` ranks; with
    fewer shards than ranks, each group of `shards` ranks is one run of its own (replica meshes), so that
    one set of processes measures several world sizes."""
    from torch.distributed.device_mesh import init_device_mesh

    from chainrule.training.parallelize import DATA_PARALLEL, TENSOR_PARALLEL

    shards = shards or world
    mesh = init_device_mesh(device, (world // shards, shards, 1), mesh_dim_names=("replica", DATA_PARALLEL,
                                                                                   TENSOR_PARALLEL))
    return mesh[(DATA_PARALLEL, TENSOR_PARALLEL)]


def _adamw(model: torch.nn.Module, fused: bool) -> torch.optim.Optimizer:
    # As conf/optim/adamw.yaml builds it: decay on matrices only (chainrule.optim.param_groups).
    return build_optimizer(partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.01, fused=fused or None), model)


def _loss(model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), idx[:, 1:].flatten())


# --- state per rank against world size -----------------------------------------------------------------
def _states_on_rank(rank: int, world: int, shape: Shape, batch: int,
                    shard_counts: list[int]) -> dict[int, dict]:
    """This rank's state after one step under FSDP over each of `shard_counts` ranks."""
    from chainrule.training.parallelize import parallelize

    found = {}
    for shards in shard_counts:
        torch.manual_seed(0)
        model = shape.build()
        parallelize(model, _mesh(world, "cpu", shards), mixed_precision=None, activation_checkpointing=False,
                    cpu_offload=False, reshard_after_forward=True)
        optimizer = _adamw(model, fused=False)
        idx = torch.randint(0, shape.vocab, (batch, shape.seq), generator=torch.Generator().manual_seed(rank))
        _loss(model, idx).backward()
        optimizer.step()  # the optimizer's state exists from its first step on
        found[shards] = asdict(state_bytes(model.parameters(), [optimizer]))
    return found


def measure_state(shape: Shape, worlds: list[int], batch: int = 2) -> dict[int, StateBytes]:
    """By world size N: the training state the largest of N FSDP ranks holds, measured (gloo, CPU). One set
    of max(worlds) processes measures every N (N must divide the largest)."""
    ranks = on_ranks(_states_on_rank, max(worlds), "gloo", shape, batch, worlds)
    return {n: max((StateBytes(**rank[n]) for rank in ranks), key=lambda s: s.total) for n in worlds}


def state_table(shapes: list[Shape], worlds: list[int]) -> tuple[list[list[str]], dict[int, float]]:
    """Rows of the state table, and bytes per parameter per rank by world size (of the last shape)."""
    rows, per_parameter = [], {}
    for shape in shapes:
        count = shape.parameters()
        measured = measure_state(shape, worlds)
        one = measured[worlds[0]]
        for world, state in measured.items():
            sizes = [human(s) for s in (state.parameters, state.gradients, state.optimizer, state.total)]
            rows.append([shape.name, f"{count:,}", str(world), *sizes,
                         f"{state.optimizer / one.optimizer:.3f}", f"{worlds[0] / world:.3f}"])
            per_parameter[world] = state.total / count
    return rows, per_parameter


def budget_table(per_parameter: dict[int, float], budget_gib: float) -> list[list[str]]:
    """For each world size, the largest candidate GPT whose state per rank fits the budget."""
    counts = [(shape, shape.parameters()) for shape in CANDIDATES]
    rows = []
    for world, bytes_per_parameter in per_parameter.items():
        fits = [(shape, count) for shape, count in counts if count * bytes_per_parameter <= budget_gib * GIB]
        largest = max(fits, key=lambda item: item[1], default=None)
        named = f"{largest[0].name} ({largest[1] / 1e6:,.0f} M)" if largest else "none of the candidates"
        rows.append([str(world), f"{bytes_per_parameter:.2f}",
                     f"{budget_gib * GIB / bytes_per_parameter / 1e9:.2f} B", named])
    return rows


# --- the GPU preset: FSDP against DDP on one GPU -------------------------------------------------------
def _gpu_modes_on_rank(rank: int, world: int, modes: tuple[str, ...], shape: Shape, batch: int, steps: int,
                       device: str) -> list[dict]:
    """Each mode in turn on this rank, its memory freed before the next (peak memory is per mode)."""
    import gc

    results = []
    for mode in modes:
        if device == "cuda":
            torch.cuda.set_device(rank)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        results.append(_train_steps(rank, world, mode, shape, batch, steps, device))
        gc.collect()
    return results


def _train_steps(rank: int, world: int, mode: str, shape: Shape, batch: int, steps: int, device: str) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from chainrule.training.parallelize import parallelize

    cuda = device == "cuda"
    torch.manual_seed(0)
    model = shape.build().to(device)
    if mode == "ddp":  # what trainer=ddp with trainer.precision=bf16-mixed runs
        trained = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
        autocast = torch.autocast(device, dtype=torch.bfloat16)
    else:  # trainer=fsdp: bf16 compute, fp32 state; fsdp+ac also recomputes each block's activations
        parallelize(model, _mesh(world, device), mixed_precision="bf16",
                    activation_checkpointing=mode == "fsdp+ac", cpu_offload=False, reshard_after_forward=True)
        trained, autocast = model, torch.autocast(device, enabled=False)
    optimizer = _adamw(model, fused=cuda)
    idx = torch.randint(0, shape.vocab, (batch, shape.seq), device=device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast:
            loss = _loss(trained, idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients: they are state to count
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    state = state_bytes(model.parameters(), [optimizer])
    timed = sorted(times[1:] or times)  # the first step allocates and warms up
    step = timed[len(timed) // 2]
    return {"mode": mode, "state": asdict(state), "peak": torch.cuda.max_memory_allocated() if cuda else None,
            "step_s": step, "tokens_per_s": batch * shape.seq / step}


GPU_MODES = ("ddp", "fsdp", "fsdp+ac")


def run_gpu_preset(shape: Shape = GPU_SHAPE, batch: int = 8, steps: int = 6,
                   device: str = "cuda") -> list[dict]:
    """DDP (bf16 autocast), FSDP (bf16 compute, fp32 state) and FSDP with activation checkpointing, one after
    the other on one `device` in a fresh process: state bytes, peak memory (CUDA), median step time, tokens
    per second. The function a one-shot GPU script calls; `device="cpu"` runs the same code with gloo (no
    peak memory)."""
    backend = "nccl" if device == "cuda" else "gloo"
    return on_ranks(_gpu_modes_on_rank, 1, backend, GPU_MODES, shape, batch, steps, device)[0]


def gpu_rows(results: list[dict], shape: Shape) -> list[list[str]]:
    rows = []
    for result in results:
        state = StateBytes(**result["state"])
        peak = human(result["peak"]) if result["peak"] else "n/a"
        rows.append([result["mode"], f"{shape.parameters() / 1e6:,.1f} M", peak, human(state.parameters),
                     human(state.gradients), human(state.optimizer), f"{result['step_s'] * 1000:.1f}",
                     f"{result['tokens_per_s']:,.0f}"])
    return rows


STATE_HEADER = ["model", "parameters", "ranks", "parameters/rank", "gradients/rank", "optimizer/rank",
                "total/rank", "optimizer vs 1 rank", "1/N"]
BUDGET_HEADER = ["ranks", "bytes/parameter/rank", "parameters that fit", "largest GPT-2-shaped model"]
GPU_HEADER = ["mode", "parameters", "peak memory", "parameters/rank", "gradients/rank", "optimizer/rank",
              "ms/step", "tokens/s"]


def main() -> None:
    # Imported here: every rank re-imports this module, and benchmarks.common loads Lightning and Hydra.
    from benchmarks.common import append_results, print_table

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default="cpu")
    parser.add_argument("--budget-gib", type=float, default=80.0, help="memory per rank for the budget table")
    parser.add_argument("--dry-run", action="store_true", help="gpu preset: the same code on the CPU, tiny")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.preset == "gpu":
        shape = DRY_RUN_SHAPE if args.dry_run else GPU_SHAPE
        assert GPU_SHAPE.parameters() >= 350e6, GPU_SHAPE.parameters()
        results = run_gpu_preset(shape, batch=2 if args.dry_run else 8, steps=2 if args.dry_run else 6,
                                 device="cpu" if args.dry_run else "cuda")
        title = f"FSDP against DDP on one device, {shape.name}, seq {shape.seq}"
        title += " (dry run)" if args.dry_run else ""
        table = print_table(title, GPU_HEADER, gpu_rows(results, shape))
    else:
        shapes, worlds = PRESETS[args.preset]
        rows, per_parameter = state_table(shapes, worlds)
        table = print_table(f"Training state per rank under FSDP (AdamW, fp32; largest rank; {args.preset})",
                            STATE_HEADER, rows)
        print()
        table += "\n\n" + print_table(
            f"Largest GPT whose training state fits {args.budget_gib:g} GiB per rank (measured bytes per "
            f"parameter)", BUDGET_HEADER, budget_table(per_parameter, args.budget_gib))
    if not args.no_record and not args.dry_run:
        append_results(table, "Activations not included.")


if __name__ == "__main__":
    main()
