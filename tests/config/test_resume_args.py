"""`resume=<run dir>` becomes the run's own overrides, the new ones (which win), and its run directory."""

from pathlib import Path

import pytest
import yaml

from chainrule.config.resume_args import resume_arguments
from chainrule.core.errors import ChainruleError


def run_dir_with(tmp_path: Path, overrides: list[str]) -> Path:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return tmp_path


def test_saved_overrides_come_first_and_given_ones_win(tmp_path: Path) -> None:
    run_dir = run_dir_with(
        tmp_path,
        [
            "data=synthetic",
            "trainer.max_epochs=4",
            "~callbacks.rich_progress_bar",
            "+trainer.plugins.0.write_delay_s=4",
        ],
    )
    argv = ["--cfg", "job", f"resume={run_dir}", "trainer.max_epochs=8", "+trainer.plugins.0.write_delay_s=0"]
    assert resume_arguments(argv) == [
        "--cfg",
        "job",
        "data=synthetic",
        "~callbacks.rich_progress_bar",
        f"resume={run_dir}",
        f"hydra.run.dir={run_dir}",
        "trainer.max_epochs=8",
        "+trainer.plugins.0.write_delay_s=0",
    ]


def test_expanding_again_adds_nothing(tmp_path: Path) -> None:
    """Lightning starts rank 1 with rank 0's expanded command line, after Hydra saved it as the overrides."""
    run_dir = run_dir_with(tmp_path, ["data=synthetic", "~callbacks.rich_progress_bar"])
    first = resume_arguments([f"resume={run_dir}"])
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([a for a in first if not a.startswith("hydra.")])
    )
    again = resume_arguments(first)
    assert [a for a in again if not a.startswith("hydra.")] == [
        a for a in first if not a.startswith("hydra.")
    ]


def test_other_command_lines_are_unchanged() -> None:
    assert resume_arguments(["data=digits", "resume=null"]) == ["data=digits", "resume=null"]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "not-a-run"])
def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path, make) -> None:
    with pytest.raises(ChainruleError, match="resume="):
        resume_arguments([f"resume={make(tmp_path)}"])
