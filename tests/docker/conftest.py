"""The real container engine for the tests marked `container`: podman set up by docker/local/setup.sh, a
Debian base made by docker/local/base.sh, the image of docker/Dockerfile built on it, and helpers that run
containers. Each step's wall time is printed at the end of the session."""

import ast
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.paths import REPO

LOCAL = REPO / "docker" / "local"
IMAGE = "localhost/chainrule-test"
# The person who starts a container run: not root, and not the image's own user, so that the run proves
# that any `--user "$(id -u):$(id -g)"` can write its files and own them. The tests run as root (rootful
# podman), so they play this user.
CALLER = (4242, 4242)
# pip settings that say where packages come from; the builds use the host's, so they install the way the
# host does (e.g. torch from a local index, the rest through a proxy whose CA only the host's bundle has).
PIP_SOURCES = ("index-url", "extra-index-url", "find-links", "cert")

STEP_SECONDS: dict[str, str] = {}


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def timed(step: str) -> Iterator[Stopwatch]:
    """Measure the wall time of `step`, for the caller and for the end-of-session summary."""
    stopwatch, start = Stopwatch(), time.monotonic()
    try:
        yield stopwatch
    finally:
        stopwatch.seconds = time.monotonic() - start
        STEP_SECONDS[step] = f"{stopwatch.seconds:.1f} s"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STEP_SECONDS:
        terminalreporter.write_sep("-", "container steps (wall time)")
        for step, seconds in STEP_SECONDS.items():
            terminalreporter.write_line(f"{step:<40} {seconds}")


@dataclass
class Podman:
    """Podman with the environment of docker/local/setup.sh: its own image store and network config."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode:
            raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """`podman run --rm --name NAME ARGS...` in the background; stdout and stderr together."""
        return subprocess.Popen(["podman", "run", "--rm", "--replace", "--name", name, *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, containers: dict[str, subprocess.Popen], timeout: float = 300) -> dict[str, str]:
        """Wait for started containers; their outputs. On timeout every one of them is removed."""
        deadline = time.monotonic() + timeout
        outputs = {}
        try:
            for name, process in containers.items():
                outputs[name] = process.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
        except subprocess.TimeoutExpired:
            # Killing the podman client leaves the container running: remove it by name.
            for name, process in containers.items():
                self("rm", "--force", name, check=False)
                process.kill()
            raise
        return outputs

    def run(self, name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`podman run --rm --name NAME ARGS...` to the end; never raises on the container's exit status."""
        process = self.start(name, *args)
        output = self.finish({name: process}, timeout)[name]
        return subprocess.CompletedProcess(process.args, process.returncode, output)

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def build(self, containerfile: Path, context: Path, tag: str, *options: str) -> None:
        result = self("build", "--file", str(containerfile), *options, "--tag", tag, str(context),
                      timeout=1800, check=False)
        assert result.returncode == 0, \
            f"podman build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    def layers(self, image: str) -> list[str]:
        layers = self("image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", image)
        return layers.stdout.split()


@pytest.fixture(scope="session")
def podman() -> Podman:
    """Installs and configures podman once per session (docker/local/setup.sh)."""
    if os.geteuid() != 0:
        pytest.skip("the container tests run podman as root (docker/local/setup.sh installs it with apt-get)")
    state_dir = os.environ.get("CHAINRULE_CONTAINER_DIR", "/var/tmp/chainrule-containers")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    started = subprocess.run([str(LOCAL / "setup.sh"), state_dir], env=env, capture_output=True, text=True,
                             timeout=900, check=False)
    if started.returncode:
        pytest.fail(f"docker/local/setup.sh failed ({started.returncode}):\n{started.stderr[-4000:]}")
    env.update(re.findall(r"^export (\w+)=(\S+)$", started.stdout, flags=re.MULTILINE))
    return Podman(env)


def host_pip_sources() -> dict[str, str]:
    """Where pip on this machine takes packages from: its config files, then its PIP_* variables."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=False)
    config = {}
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if section in ("global", "install") and name in PIP_SOURCES:
            config[name] = ast.literal_eval(value)
    for name in PIP_SOURCES:
        if value := os.environ.get("PIP_" + name.upper().replace("-", "_")):
            config[name] = value
    return config


def pip_build_options(sources: dict[str, str]) -> list[str]:
    """podman build options that hand pip `sources` inside the build: each as a build arg (PIP_*), each
    local path mounted read-only where it is on the host. A local index's parent folder is mounted, since
    its pages link to files beside it (simple/<name>/ -> ../../files/)."""
    options, mounts = [], set()
    for name, value in sources.items():
        options += ["--build-arg", f"PIP_{name.upper().replace('-', '_')}={value}"]
        for location in value.split():
            path = Path(urlparse(location).path) if location.startswith("file:") else Path(location)
            if not path.is_absolute() or not path.exists():
                continue
            mounts.add(path.parent if name.endswith("index-url") else path)
    for path in sorted(mounts):
        options += ["--volume", f"{path}:{path}:ro"]
    return options


@pytest.fixture(scope="session")
def pip_options() -> list[str]:
    return pip_build_options(host_pip_sources())


@pytest.fixture(scope="session")
def base_image(podman: Podman, pip_options: list[str]) -> str:
    """Debian + Python + the Makefile's torch (docker/local/base.sh). Kept between sessions, under a tag
    that changes with everything it is made from; built only when missing (a few minutes)."""
    recipe = b"".join(p.read_bytes() for p in (LOCAL / "Containerfile.debian", LOCAL / "base.sh"))
    recipe += re.search(rb"torch==\S+ torchvision==\S+", (REPO / "Makefile").read_bytes()).group()
    image = f"{IMAGE}-base:{sha256(recipe).hexdigest()[:12]}"
    if podman.exists(image):
        STEP_SECONDS["base image"] = "kept from an earlier session"
        return image
    with timed("base image (debootstrap + torch)"):
        made = subprocess.run([str(LOCAL / "base.sh"), image, *pip_options], env=podman.env,
                              capture_output=True, text=True, timeout=1800, check=False)
    assert made.returncode == 0, f"docker/local/base.sh failed:\n{made.stderr[-4000:]}"
    return image


@dataclass
class Built:
    name: str
    seconds: float


@pytest.fixture(scope="session")
def image(podman: Podman, base_image: str, pip_options: list[str]) -> Iterator[Built]:
    """docker/Dockerfile, unchanged, built from this repository on the local base. A first build every
    session (--no-cache); this session's images and leftovers of earlier ones are removed."""
    remove_test_images(podman)
    with timed("first build") as build:
        podman.build(REPO / "docker" / "Dockerfile", REPO, f"{IMAGE}:first", "--no-cache",
                     "--build-arg", f"BASE_IMAGE={base_image}", *pip_options)
    built = Built(f"{IMAGE}:first", build.seconds)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", built.name).stdout)
    STEP_SECONDS["image size"] = f"{size / 1e9:.2f} GB"
    yield built
    remove_test_images(podman)


def remove_test_images(podman: Podman) -> None:
    """This session's tagged images, then the untagged layers that only they used (podman's store here is
    private to these tests and to docker/local users, never the machine's)."""
    tags = podman("images", "--format", "{{.Repository}}:{{.Tag}}", f"{IMAGE}").stdout.split()
    if tags:
        podman("rmi", "--force", *tags, check=False)
    podman("image", "prune", "--force", check=False)


def owned_directory(path: Path, owner: tuple[int, int]) -> Path:
    """A directory owned by `owner` and writable by it alone: what a user's run directory looks like."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    path.chmod(0o755)
    return path


def image_user(podman: Podman, image: str) -> tuple[int, int]:
    uid, gid = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip().split(":")
    return int(uid), int(gid)


def files_not_owned_by(root: Path, owner: tuple[int, int]) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if (p.lstat().st_uid, p.lstat().st_gid) != owner]
