"""docker/Dockerfile checked against the project, without a Docker engine: hadolint, the files it copies,
the package it installs, its base image and its entrypoint; and the config mount it documents."""

import importlib
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.paths import BIN, REPO
from tests.support.processes import run_cli

DOCKERFILE = REPO / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip()]


def arguments(instruction: str) -> list[str]:
    return [args for name, args in instructions() if name == instruction]


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository root) out of the build context:
    patterns are anchored at the root, `**` spans directories, and excluding a directory excludes
    everything below it."""
    patterns = [line.strip().strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled here"
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            return True
    return False


@pytest.mark.parametrize("containerfile", [DOCKERFILE, REPO / "docker" / "local" / "Containerfile.debian"],
                         ids=lambda p: p.name)
def test_hadolint_reports_no_errors(containerfile: Path) -> None:
    hadolint = BIN / "hadolint"
    result = subprocess.run([str(hadolint), "--format", "json", str(containerfile)], capture_output=True,
                            text=True)
    findings = json.loads(result.stdout)
    assert [f for f in findings if f["level"] == "error"] == [], findings


def test_every_copy_source_is_in_the_build_context() -> None:
    sources = []
    for args in arguments("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(args)):
            continue  # copied from another stage, not from the context
        sources += words[:-1]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
        tracked = subprocess.run(["git", "ls-files", source], cwd=REPO, capture_output=True, text=True).stdout
        excluded = [f for f in tracked.split() if dockerignore_excludes(f)]
        assert not excluded, f"COPY {source}: .dockerignore drops {excluded}"


@pytest.mark.parametrize("path", ["data/mnist/x.gz", "logs/train/runs/1/last.ckpt", "outputs/a", "multirun/b",
                                  ".venv/bin/python", "wandb/run-1", "src/chainrule/__pycache__/x.pyc",
                                  ".git/HEAD"])
def test_dockerignore_keeps_data_outputs_and_venvs_out(path: str) -> None:
    assert dockerignore_excludes(path)


def test_the_wheel_is_built_from_this_repository_with_its_packaged_files() -> None:
    runs = arguments("RUN")
    assert any(re.search(r"pip wheel .*--no-deps .*\s\.$", run) for run in runs), runs
    copied = {w.rstrip("/") for args in arguments("COPY") for w in shlex.split(args)[:-1]}
    # everything the wheel build reads: the readme, and the folders pyproject.toml force-includes
    force_included = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "src", *force_included}
    assert needed <= copied, needed - copied


def test_install_lines_install_the_package_with_the_extras_the_makefile_installs() -> None:
    """`make install` installs `.[dev]`: chainrule[<runtime extras>] plus test tools. The image installs
    the same chainrule with the same runtime extras, and no test tools: first their dependencies, read
    from pyproject.toml, then the wheel."""
    assert "pip install --quiet -e '.[dev]'" in (REPO / "Makefile").read_text()
    dev = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    runtime_extras = {extra for r in dev if r.name == PYPROJECT["project"]["name"] for extra in r.extras}
    extras_arg = next(args.split("=", 1)[1] for args in arguments("ARG")
                      if args.startswith("CHAINRULE_EXTRAS="))
    assert set(extras_arg.split(",")) == runtime_extras
    installs = [run for run in arguments("RUN") if "pip install" in run]
    assert len(installs) == 2, installs
    dependencies, package = installs
    assert "pyproject.toml" in dependencies and "${CHAINRULE_EXTRAS}" in dependencies, dependencies
    assert re.search(r"chainrule-\*\.whl'\)\[\$\{CHAINRULE_EXTRAS\}\]", package), package
    for extra in runtime_extras:
        assert extra in PYPROJECT["project"]["optional-dependencies"]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    """A change to src/ then rebuilds chainrule's own layers only (tests/docker/test_container.py builds
    it twice to show it)."""
    steps = [f"{name} {args}" for name, args in instructions()]
    steps = steps[steps.index("FROM ${BASE_IMAGE} AS runtime"):]
    dependencies = next(i for i, step in enumerate(steps) if "--requirement" in step)
    wheel = next(i for i, step in enumerate(steps) if step.startswith("COPY --from=build"))
    assert dependencies < wheel
    assert not any("src" in step for step in steps[:dependencies] if step.startswith("COPY")), steps


def test_base_image_is_pinned_cuda_12_with_a_torch_the_package_accepts() -> None:
    base = next(args.split("=", 1)[1] for args in arguments("ARG") if args.startswith("BASE_IMAGE="))
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn\d+-runtime", base)
    assert match, f"{base}: not a pinned pytorch/pytorch runtime tag"
    torch_version, cuda_major = match.group(1), int(match.group(2))
    assert cuda_major == 12
    torch_requirement = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"]
                             if Requirement(r).name == "torch")
    assert torch_requirement.specifier.contains(torch_version), f"{base} has torch {torch_version}, " \
                                                                f"pyproject.toml needs {torch_requirement}"
    assert arguments("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]


def test_entrypoint_is_a_console_script_of_the_package() -> None:
    entrypoint = json.loads(arguments("ENTRYPOINT")[-1])
    assert entrypoint == ["chainrule-train"]
    module, function = PYPROJECT["project"]["scripts"][entrypoint[0]].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_image_runs_as_a_non_root_user() -> None:
    names = [name for name, _ in instructions()]
    users = arguments("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert names.index("USER") < names.index("ENTRYPOINT")


def test_every_console_script_resolves() -> None:
    for name, target in PYPROJECT["project"]["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_apptainer_definition_runs_the_docker_image_entrypoint() -> None:
    definition = (REPO / "docker" / "chainrule.def").read_text()
    assert re.search(r"^Bootstrap: docker-daemon$", definition, re.MULTILINE)
    image = re.search(r"^From: (\S+)$", definition, re.MULTILINE).group(1)
    assert f"docker build -f docker/Dockerfile -t {image} ." in (REPO / "docker" / "README.md").read_text()
    assert re.search(r'^%runscript\n\s+exec chainrule-train "\$@"$', definition, re.MULTILINE)


@pytest.mark.slow
def test_a_mounted_config_tree_replaces_the_packaged_one(tmp_path: Path) -> None:
    """What `-v ./conf:/opt/chainrule/conf` does in the image: chainrule reads CHAINRULE_CONFIG_DIR."""
    conf = tmp_path / "conf"
    subprocess.run(["cp", "-r", str(REPO / "conf"), str(conf)], check=True)
    (conf / "experiment" / "mounted.yaml").write_text("# @package _global_\nname: from_the_mount\nseed: 7\n")
    result = run_cli("chainrule-train", "experiment=mounted", "--cfg", "job", cwd=tmp_path,
                     env={"CHAINRULE_CONFIG_DIR": str(conf)})
    assert result.returncode == 0, result.stderr
    assert "name: from_the_mount" in result.stdout and "seed: 7" in result.stdout
