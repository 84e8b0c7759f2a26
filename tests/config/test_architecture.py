"""The architecture contract (docs/architecture.md, [tool.importlinter] in pyproject.toml): a package
imports only the layers below it; and each rule of the project has exactly one definition."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import BIN, REPO

SRC = REPO / "src" / "chainrule"
LINT_IMPORTS = BIN / "lint-imports"


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """import-linter over the `chainrule` package found in `package_parent`, with the project's contract."""
    env = {"PATH": str(BIN), "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(REPO / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "back_import"), [
    ("core/errors.py", "import chainrule.cli.train"),  # the foundation reaching for an entry point
    ("models/mlp.py", "from chainrule.training import task"),  # a plain model depending on Lightning's task
    ("data/base.py", "import chainrule.models.mlp"),  # siblings on one layer stay independent
])
def test_a_back_import_breaks_the_contract(tmp_path: Path, module: str, back_import: str) -> None:
    copy = tmp_path / "chainrule"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / module
    path.write_text(path.read_text() + f"\n{back_import}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout or "broken" in result.stdout, result.stdout
    importer = "chainrule." + module.removesuffix(".py").replace("/", ".")
    assert importer in result.stdout, result.stdout


def test_every_subpackage_has_a_place_in_the_layers() -> None:
    text = (REPO / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[(.*?)\]", text, re.S).group(1)
    named = set(re.findall(r"\w+", layers))
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == named, f"in the layers but not packages, or packages without a layer: {packages ^ named}"


# Each rule, and the one module allowed to state it. A second statement elsewhere under src/ fails here:
# import the rule from its home instead.
RULES = {
    # how a global batch splits over ranks and accumulation steps
    r"global_batch_size % shards|% \(world_size \* accumulate": "data/batching.py",
    # devices per node, counted from trainer.devices
    r"devices\.split\(\",\"\)|len\(devices\)": "launch/devices.py",
    # strategies Lightning starts itself
    r"\"spawn\", \"fork\"": "launch/devices.py",
    # the run id of a SLURM job, and the naming of run directories
    r"f\"slurm-\{": "launch/run_id.py",
    # where a run resumes from: the newest intact checkpoint
    r"\.rglob\(\"\*\.ckpt\"\)|glob\(\"checkpoints": "checkpointing/discovery.py",
    # the W&B run id of a run directory
    r"wandb_run_id\"": "loggers/wandb.py",
    # Lightning's private step counter: the step axis callbacks log on
    r"_batches_that_stepped": "core/log_steps.py",
    # the config groups that build objects
    r"\(\"data\", \"model\", \"task\"": "config/groups.py",
    # the one-line error format
    r"f\"chainrule: error:": "core/console.py",
}


@pytest.mark.parametrize("pattern", list(RULES))
def test_each_rule_has_one_definition(pattern: str) -> None:
    found = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if re.search(pattern, "\n".join(line for line in p.read_text().splitlines()
                                                   if not line.lstrip().startswith("#"))))
    assert found == [RULES[pattern]], f"{pattern!r} is stated in {found}; keep it in {RULES[pattern]}"


def test_the_checkpoint_directory_and_monitored_metric_are_one_key_each() -> None:
    conf = REPO / "conf"
    texts = {p.relative_to(conf): p.read_text() for p in conf.rglob("*.yaml")}
    assert [p for p, t in texts.items() if "}/checkpoints" in t] == [Path("paths/default.yaml")]
    assert [p for p, t in texts.items() if re.search(r"monitor: val/", t)] == []
    # torch hub's folder of downloaded weights (models/vision.py) is torch's layout, not a run's.
    code = "\n".join(line for p in SRC.rglob("*.py") for line in p.read_text().splitlines()
                     if "torch.hub" not in line)
    assert '"checkpoints"' not in code and "'checkpoints'" not in code
    assert not re.search(r"= \"val/loss\"", code)
