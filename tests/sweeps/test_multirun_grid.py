"""Grid and list sweeps with Hydra's own multirun (`chainrule-train -m a=1,2 b=x,y`)."""

import pytest
import yaml

from tests.support.metrics import metrics_csv
from tests.support.processes import ONE_THREAD, run_cli

pytestmark = pytest.mark.slow


def test_multirun_runs_every_combination_in_its_own_directory(sweeps, tmp_path):
    """As typed: default paths (the sweep directory under ./logs), from a directory of the user's."""
    result = run_cli("chainrule-train", "-m", "optim.lr=0.001,0.01", "optim=adamw,sgd",
                     "trainer.max_epochs=1", *sweeps.fast_trial, cwd=tmp_path, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()

    combos = set()
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        combos.add((next(o for o in overrides if o.startswith("optim.lr=")),
                    next(o for o in overrides if o.startswith("optim="))))
        assert "val/acc" in metrics_csv(job).read_text().splitlines()[0]
    assert combos == {(f"optim.lr={lr}", f"optim={name}")
                      for lr in ("0.001", "0.01") for name in ("adamw", "sgd")}
