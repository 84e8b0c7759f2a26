"""Ranks that resolve different configs stop and name the keys that differ
(chainrule.callbacks.config_agreement)."""

from pathlib import Path

import pytest

from chainrule.callbacks.config_agreement import config_differences
from tests.support.presets import DDP_RUN
from tests.support.processes import finish, free_port, start


def test_config_differences_name_the_dotted_keys() -> None:
    reference = {"optim": {"lr": 0.1, "momentum": 0.9}, "seed": 1, "tags": ["a"]}
    assert config_differences(reference, reference) == []
    other = {"optim": {"lr": 0.2, "momentum": 0.9}, "seed": 1, "tags": ["b"], "extra": 1}
    assert config_differences(reference, other) == ["extra", "optim.lr", "tags"]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_ranks_that_resolve_different_configs_stop_and_name_the_key(tmp_path: Path) -> None:
    """Ranks started by a plain launcher exporting only RANK/WORLD_SIZE/MASTER_*; rank 1 was given a
    different learning rate. Training two different models silently would be worse than failing."""
    rendezvous = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                  "CHAINRULE_RUN_ID": "mismatch"}
    ranks = [
        start("chainrule-train", *DDP_RUN, "trainer=ddp_cpu", "trainer.devices=2",
              f"paths.log_dir={tmp_path}/logs", *(["optim.lr=0.07"] if rank else []),
              cwd=tmp_path, env={"RANK": str(rank), **rendezvous})
        for rank in range(2)
    ]
    outputs = finish(ranks, timeout=180)
    assert [rank.returncode != 0 for rank in ranks] == [True, True], "\n".join(o[-2000:] for o in outputs)
    assert "[rank 1] chainrule: error: rank 1 resolved optim.lr differently" in outputs[1]
    assert "rank 1 resolved optim.lr differently from rank 0" in outputs[1], outputs[1][-2000:]
    assert "another rank resolved a different config from rank 0's" in outputs[0], outputs[0][-2000:]
    assert [p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir()] == ["mismatch"]
