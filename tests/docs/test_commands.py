"""Every shell command in README.md and docs/*.md runs as typed, from the root of a fresh clone, with the
default paths, loggers and callbacks.

The commands run in the order the documents give them, each document in one fresh clone, so a command
may use what an earlier one made (`resume=latest` after a training run). The one shortcut is
CHAINRULE_QUICK=1, which the config reads (README: "Try a command quickly") to cut every run to a few
batches per epoch and a sweep to a few trials. A command that needs what this machine does not have
says so at the end of its line's comment: `[needs: a GPU]`, `[needs: a SLURM cluster]`, `[needs:
network]`, ...; those are listed, not run.
"""

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import BIN, REPO
from tests.support.processes import ONE_THREAD, inherited

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NEEDS = re.compile(r"\[needs: ([^\]]+)\]\s*$")
SHELL_FENCES = ("```bash", "```sh", "```shell")


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str  # as typed, continuation lines joined
    needs: str | None  # what it needs that this machine lacks, from its `# needs:` comment

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


def commands(document: Path) -> list[Command]:
    """The commands of `document`'s shell blocks: one per line, `\\` continuations joined, comment lines
    and example output (lines starting with `#`) left out."""
    found, block, pending, start = [], False, "", 0
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        if line.startswith("```"):
            block = line.strip() in SHELL_FENCES
            continue
        if not block or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        if not pending:
            start = number
        pending += line.rstrip().removesuffix("\\").strip() + " "
        if line.rstrip().endswith("\\"):
            continue
        text = pending.strip()
        pending = ""
        needs = NEEDS.search(text)
        found.append(Command(document.name, start, text, needs.group(1).strip() if needs else None))
    return found


def fresh_clone(destination: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked, plus new files not yet ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def shell_environment() -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`, with the one documented shortcut."""
    env = {key: value for key, value in os.environ.items() if inherited(key) and not key.startswith("PYTEST_")}
    venv = BIN.parent
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               CHAINRULE_QUICK="1", VENV=str(venv), PYTHONUNBUFFERED="1", **ONE_THREAD)
    return env


def check_install_stamp() -> None:
    """`make` in the clone installs into this environment (VENV) unless the Makefile's stamp for this very
    pyproject.toml is there; an install from the clone would point the environment at the clone."""
    checksum = subprocess.run("cksum < pyproject.toml", shell=True, cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.split()[0]
    if not (BIN.parent / f".installed-{checksum}").is_file():
        pytest.fail(f"{BIN.parent} is not installed for this pyproject.toml: run `make install` first")


def run(command: Command, clone: Path, timeout: float) -> subprocess.CompletedProcess:
    # `source .venv/bin/activate` makes no sense in a subshell of its own; the environment above is
    # what it does.
    text = "true" if command.text.startswith("source ") else command.text
    return subprocess.run(["bash", "-c", text], cwd=clone, env=shell_environment(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_command_of_the_document_runs_as_typed(document: Path, tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "chainrule")
    skipped = []
    for command in commands(document):
        if command.needs:
            skipped.append(str(command))
            continue
        if command.text.startswith("make "):
            check_install_stamp()
        result = run(command, clone, timeout=600)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout[-3000:]}\n" \
                                       f"{result.stderr[-3000:]}"
    if skipped:
        print("not run here:", *skipped, sep="\n  ")


def test_commands_are_found_in_every_shell_block() -> None:
    readme = commands(REPO / "README.md")
    assert any(c.text.startswith("chainrule-train -m hparams_search=digits_mlp") for c in readme)
    assert all(not c.text.startswith("#") for c in readme)
    joined = [c for c in readme if "trainer.gradient_clip_val=1.0" in c.text]
    assert joined and "\\" not in joined[0].text


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_commands_have_no_placeholders(document: Path) -> None:
    """A command with `<run dir>` in it cannot be run as typed; name real things (`resume=latest`)."""
    for command in commands(document):
        if command.needs is None:
            words = shlex.split(command.text, comments=True)
            assert not any(re.search(r"<[^>]+>", w) for w in words), f"{command}: fill in the placeholder"
