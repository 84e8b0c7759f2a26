"""docker/Dockerfile built and run for real (podman): the default experiment trains inside as a non-root
user and leaves its files on the caller's volume, a second container evaluates its checkpoint, DDP across
two containers equals one process, and a change to src/ rebuilds only the top layers."""

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.docker.conftest import (
    CALLER,
    IMAGE,
    REPO,
    Built,
    Podman,
    files_not_owned_by,
    image_user,
    owned_directory,
    timed,
)
from tests.support.checkpoints import assert_same_parameters, files_in
from tests.support.metrics import read_metric
from tests.support.presets import DDP_RUN_STEPS

# The first session on a machine installs podman and builds the base (minutes) within the first test.
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1800)]

# As conf/ defines it: runs write under /workspace/logs (paths.log_dir); torchrun's rendezvous id names
# the run directory that both DDP containers share.
LOGS = "/workspace/logs"
NETWORK = "chainrule-test"
# The default experiment, short; DDP equals one process only without dropout (each process draws its own
# masks). SGD, as in tests/ddp, whose check of the parameters this test shares.
DDP_RUN = ("model.dropout=0", "optim=sgd", f"trainer.max_steps={DDP_RUN_STEPS}", "logger=csv")


def installed_versions(podman: Podman, image: str) -> dict[str, str]:
    script = ("import importlib.metadata as m; "
              "print(*(f'{d}=={m.version(d)}' for d in ('torch', 'torchvision')))")
    result = podman.run("chainrule-test-versions", "--entrypoint", "python", image, "-c", script)
    assert result.returncode == 0, result.stdout
    return dict(spec.split("==") for spec in result.stdout.split())


def test_base_and_image_hold_the_torch_the_makefile_pins(podman: Podman, base_image: str,
                                                          image: Built) -> None:
    pins = dict(spec.split("==") for spec in
                re.search(r"torch==\S+ torchvision==\S+", (REPO / "Makefile").read_text()).group().split())
    assert installed_versions(podman, base_image) == pins
    # Installing chainrule and its dependencies did not swap them for other builds.
    assert installed_versions(podman, image.name) == pins


@pytest.fixture(scope="module")
def default_run(podman: Podman, image: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`chainrule-train` with no arguments, as the caller, the run directory on the caller's volume."""
    logs = owned_directory(tmp_path_factory.mktemp("default") / "logs", CALLER)
    with timed("train run (default experiment)"):
        result = podman.run("chainrule-test-train", "--user", "{}:{}".format(*CALLER),
                            "--volume", f"{logs}:{LOGS}", image.name)
    assert result.returncode == 0, result.stdout[-4000:]
    (run_dir,) = (logs / "train" / "runs").iterdir()
    return run_dir


def test_default_run_leaves_checkpoints_metrics_and_wandb_run_on_the_callers_volume(
        default_run: Path) -> None:
    checkpoints = sorted(p.name for p in (default_run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) > 1, checkpoints
    best = Path(json.loads((default_run / "finished.json").read_text())["best_checkpoint"])
    assert (default_run / "checkpoints" / best.name).is_file()
    state = torch.load(default_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["state_dict"]

    assert read_metric(default_run, "test/acc")[-1] >= 0.95
    (wandb_run,) = (default_run / "wandb").glob("offline-run-*")
    (records,) = wandb_run.glob("run-*.wandb")
    assert records.stat().st_size > 0
    # The container wrote as the caller: everything is the caller's, nothing root's.
    assert files_not_owned_by(default_run.parents[2], CALLER) == []


def test_eval_in_a_second_container_reproduces_the_test_accuracy(podman: Podman, image: Built,
                                                                  default_run: Path,
                                                                  tmp_path_factory: pytest.TempPathFactory
                                                                  ) -> None:
    """As the image's own user (no --user), the training run mounted read-only."""
    owner = image_user(podman, image.name)
    assert owner[0] != 0
    logs = owned_directory(tmp_path_factory.mktemp("eval") / "logs", owner)
    best = Path(json.loads((default_run / "finished.json").read_text())["best_checkpoint"])
    with timed("eval run"):
        result = podman.run("chainrule-test-eval", "--volume", f"{default_run}:/run-to-test:ro",
                            "--volume", f"{logs}:{LOGS}", "--entrypoint", "chainrule-eval", image.name,
                            f"ckpt_path=/run-to-test/checkpoints/{best.name}")
    assert result.returncode == 0, result.stdout[-4000:]
    (eval_dir,) = (logs / "eval" / "runs").iterdir()
    assert read_metric(eval_dir, "test/acc") == pytest.approx(read_metric(default_run, "test/acc")[-1:],
                                                              abs=1e-6)
    assert files_not_owned_by(logs, owner) == []


@pytest.fixture(scope="module")
def network(podman: Podman) -> Iterator[ipaddress.IPv4Network]:
    """A podman bridge network for the DDP containers; its subnet, for fixed addresses."""
    podman("network", "rm", "--force", NETWORK, check=False)
    podman("network", "create", NETWORK)
    subnet = podman("network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}}{{end}}", NETWORK).stdout
    yield ipaddress.ip_network(subnet.strip())
    podman("network", "rm", "--force", NETWORK, check=False)


def test_ddp_across_two_containers_equals_one_process(podman: Podman, image: Built,
                                                      network: ipaddress.IPv4Network,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two containers on one podman network, one rank each (gloo), started by torchrun with a c10d
    rendezvous like two nodes; the run directory on a volume both mount, like a cluster's shared disk."""
    logs = owned_directory(tmp_path_factory.mktemp("ddp") / "logs", CALLER)
    user_and_volume = ("--user", "{}:{}".format(*CALLER), "--volume", f"{logs}:{LOGS}")
    # Names resolve through each container's /etc/hosts, as a cluster's do; torchrun's workers meet at the
    # address the rendezvous host advertises, its hostname.
    hosts = {f"node{rank}": str(network[10 + rank]) for rank in range(2)}
    add_hosts = [f"--add-host={host}:{address}" for host, address in hosts.items()]
    with timed("DDP run (2 containers)"):
        ranks = {
            f"chainrule-test-{host}": podman.start(
                f"chainrule-test-{host}", *user_and_volume, "--network", NETWORK, "--ip", address,
                "--hostname", host, *add_hosts, "--entrypoint", "torchrun", image.name,
                "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500",
                "--rdzv-id=twocontainers", "--max-restarts=0", "--no-python", "chainrule-train", *DDP_RUN,
                "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", "name=ddp")
            for host, address in hosts.items()
        }
        outputs = podman.finish(ranks)
    assert [p.returncode for p in ranks.values()] == [0, 0], "\n".join(o[-3000:] for o in outputs.values())
    with timed("1-process reference run"):
        single = podman.run("chainrule-test-single", *user_and_volume, image.name, *DDP_RUN, "trainer=cpu",
                            "name=single")
    assert single.returncode == 0, single.stdout[-4000:]

    (ddp_dir,) = (logs / "ddp" / "runs").iterdir()
    (single_dir,) = (logs / "single" / "runs").iterdir()
    assert ddp_dir.name == "torchrun-twocontainers"
    # Only rank 0 wrote into the shared run directory: the files of a 1-process run, no more.
    assert files_in(ddp_dir) == files_in(single_dir)
    assert "[rank 1] Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in outputs["chainrule-test-node1"]

    # Every parameter within 1e-6 (relative) of the 1-process run's, after the same steps.
    assert_same_parameters(ddp_dir / "checkpoints" / "last.ckpt", single_dir / "checkpoints" / "last.ckpt")


def test_a_one_line_change_to_src_rebuilds_only_the_top_layers(podman: Podman, image: Built,
                                                               base_image: str, pip_options: list[str],
                                                               tmp_path: Path) -> None:
    """The build context copied (the files git would give a clone, uncommitted ones included), one line
    added to src/, and built again: the dependency layers come from the first build's cache."""
    context = tmp_path / "context"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, context / name)
    with open(context / "src" / "chainrule" / "__init__.py", "a") as f:
        f.write('REBUILD_MARKER = "changed"\n')

    with timed("rebuild after a one-line change to src/") as rebuild:
        podman.build(context / "docker" / "Dockerfile", context, f"{IMAGE}:rebuilt",
                     "--build-arg", f"BASE_IMAGE={base_image}", *pip_options)
    assert rebuild.seconds < image.seconds / 3, \
        f"rebuild {rebuild.seconds:.0f} s, first build {image.seconds:.0f} s"

    first, rebuilt = podman.layers(image.name), podman.layers(f"{IMAGE}:rebuilt")
    shared = next((i for i, (a, b) in enumerate(zip(first, rebuilt)) if a != b), len(first))
    # Only chainrule's wheel and its installation are new; the dependencies and conf/ are reused.
    assert len(rebuilt) == len(first) and len(rebuilt) - shared == 2, (first, rebuilt)
    result = podman.run("chainrule-test-marker", "--entrypoint", "python", f"{IMAGE}:rebuilt", "-c",
                        "import chainrule; print(chainrule.REBUILD_MARKER)")
    assert result.stdout.strip().splitlines()[-1:] == ["changed"], result.stdout
