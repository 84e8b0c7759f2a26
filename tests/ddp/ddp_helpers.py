"""Shared pieces of the DDP tests: one training config and helpers that start chainrule's real entry
points in subprocesses (real gloo process groups on CPU)."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

# A tiny classification run: 223 samples -> 133 train (4 global batches of 32 per epoch), 45 validation
# and 45 test samples (odd: split over 2 ranks, padding would duplicate a sample). 8 optimizer steps =
# 2 epochs, so the per-epoch reshuffle is covered. Plain SGD (momentum) and no dropout: dropout masks
# depend on each process's random stream, so a run with dropout cannot equal a single process exactly.
STEPS = 8
TRAIN = (
    "data=synthetic", "data.num_samples=223", "data.batch_size=32", "model.dropout=0", "optim=sgd",
    f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", "~callbacks.rich_progress_bar",
    "trainer.enable_progress_bar=false", "logger=csv",
)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment, less any launcher's variables, with chainrule's source and the
    `tests` package importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_", "CHAINRULE_")) and k not in
           ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK",
            "HYDRA_FULL_ERROR")}
    paths = [str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def run_cli(command: str, *args: str, cwd: Path, timeout: float = 240,
            **env: str) -> subprocess.CompletedProcess:
    """Run a chainrule console script to the end; stdout and stderr together in `.stdout`."""
    return subprocess.run([str(BIN / command), *args], cwd=cwd, env=subprocess_env(**env), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """Start one process the way a launcher would; stdout and stderr together."""
    return subprocess.Popen(argv, cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(processes: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    """Wait for every process; their outputs (also on failure, for the assertion message)."""
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
    return outputs


def free_port(low: int | None = None, high: int | None = None) -> int:
    """A free TCP port on 127.0.0.1, optionally within [low, high]."""
    for port in (range(low, high + 1) if low is not None else [0]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port in [{low}, {high}]")


def parameters(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_parameters(checkpoint: Path, reference: Path, rtol: float = 1e-6) -> None:
    """Every parameter tensor within `rtol` of the reference, relative to the reference's norm, after
    the same number of optimizer steps."""
    ours, theirs = torch.load(checkpoint, weights_only=True), torch.load(reference, weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == STEPS
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    errors = {name: ((value - theirs["state_dict"][name]).norm() / theirs["state_dict"][name].norm()).item()
              for name, value in ours["state_dict"].items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= rtol, f"{worst} differs by {errors[worst]:.3g} relative (> {rtol})"
    # The runs did train: SGD's momentum buffers are non-zero after STEPS steps.
    momenta = [s["momentum_buffer"] for s in ours["optimizer_states"][0]["state"].values()]
    assert momenta and all(m.abs().sum() > 0 for m in momenta)


def files_in(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def logged(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))
