"""What a run prints: a short default run (a header, progress, one summary), progress lines while output
goes to a pipe (a SLURM log), nothing a person would need to scroll past, and `--help` of our own."""

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.paths import BIN
from tests.support.processes import ONE_THREAD, cli_env, run_cli

# Lines that libraries print and that chainrule silences; none may reach a default run's output.
LIBRARY_CHATTER = [r"^wandb:", r"Warning", r"GPU available", r"TPU available", r"💡", r"`srun`", r"LeafSpec",
                   r"weights_only", r"Seed set to", r"Restoring states", r"┏", r"Epoch \d+/\d+"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """`chainrule-train` as typed, default loggers and callbacks, its output read through a pipe."""
    home = tmp_path_factory.mktemp("user")
    result = run_cli("chainrule-train", cwd=home, env={"WANDB_MODE": None, **ONE_THREAD}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    result.home = home
    return result


@pytest.mark.slow
def test_a_default_run_prints_at_most_60_lines_and_no_library_chatter(default_run) -> None:
    lines = (default_run.stdout + default_run.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    for pattern in LIBRARY_CHATTER:
        assert not [line for line in lines if re.search(pattern, line)], pattern


@pytest.mark.slow
def test_the_summary_says_what_a_person_needs_next(default_run) -> None:
    text = default_run.stdout
    (run_dir,) = (default_run.home / "logs" / "train" / "runs").iterdir()
    for metric in ("test/acc", "test/loss", "val/acc", "val/loss"):
        assert re.search(rf"^{re.escape(metric)}\s+\d\.\d{{4}}$", text, re.M), metric
    assert re.search(r"^training stopped: (reached trainer.max_epochs=20|early stopping at epoch \d+)", text, re.M)
    assert re.search(r"^time: (\d+m)?\d+s$", text, re.M)
    assert f"run directory: {run_dir}\n" in text
    assert re.search(rf"^best checkpoint: {re.escape(str(run_dir / 'checkpoints'))}/epoch\d+-step\d+\.ckpt$", text,
                     re.M)
    assert f"last checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}\n" in text
    assert f"continue or extend: chainrule-train resume={run_dir} trainer.max_epochs=40\n" in text
    sync = re.search(r"^upload the W&B run: wandb sync (\S+)$", text, re.M)
    assert sync and Path(sync.group(1)).is_dir() and text.count("wandb sync") == 1
    # The same lines are in the run's log file.
    log = (run_dir / "train.log").read_text()
    assert "continue or extend: chainrule-train resume=" in log and "upload the W&B run" in log


@pytest.mark.slow
def test_piped_output_gets_progress_lines_while_training_and_never_splits_a_path(tmp_path: Path) -> None:
    started = time.monotonic()
    process = subprocess.Popen([str(BIN / "chainrule-train"), "trainer.max_epochs=60", "callbacks.early_stopping=null",
                                "callbacks.progress.every_s=2"],
                               cwd=tmp_path, env=cli_env(**ONE_THREAD), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    arrivals = []  # (seconds since start, line)
    for line in process.stdout:
        arrivals.append((time.monotonic() - started, line.rstrip("\n")))
    assert process.wait(timeout=600) == 0, "\n".join(line for _, line in arrivals[-40:])
    ended = time.monotonic() - started
    progress = [(t, line) for t, line in arrivals if re.match(r"^epoch \d+/60 +step \d+/\d+ ", line)]
    assert ended >= 10
    assert len([t for t, _ in progress if t < ended - 2]) > 1  # while training, not at the end
    assert all(" samples/s" in line for _, line in progress)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    logged = (run_dir / "train.log").read_text()
    assert all(line in logged for _, line in progress)
    for _, line in arrivals:  # every path printed is whole on its line
        for path in re.findall(r"(/\S+)", line):
            if path.startswith(str(tmp_path)):
                assert Path(path.rstrip(".,;:)")).exists() or "offline-run" in path, line


@pytest.mark.parametrize("command", ["chainrule-train", "chainrule-eval", "chainrule-gradcheck"])
def test_help_describes_the_command_with_examples_and_groups(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"{command}: ")
    examples = [line for line in text.splitlines() if line.startswith(f"  {command} ")]
    assert 6 <= len(examples) <= 12, examples
    assert re.search(r"^  trainer +cpu, ddp, ddp_cpu, default, fsdp, fsdp_cpu, gpu$", text, re.M)
    assert "each/" not in text and "== Configuration groups ==" not in text  # groups, not single files


@pytest.mark.slow
def test_a_site_config_in_the_users_own_folder_is_an_option(tmp_path: Path) -> None:
    (tmp_path / "conf" / "cluster").mkdir(parents=True)
    (tmp_path / "conf" / "cluster" / "mysite.yaml").write_text(
        "defaults:\n  - default\npartition: gpu-a100\naccount: ml-team\n")
    script = run_cli("chainrule-submit", "--dry-run", "cluster=mysite", "trainer=cpu", cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert "#SBATCH --partition=gpu-a100" in script.stdout and "#SBATCH --account=ml-team" in script.stdout
    listed = run_cli("chainrule-train", "--help", cwd=tmp_path).stdout
    assert re.search(r"^  cluster +default, local, mysite$", listed, re.M)
