"""A test-only callback that records which samples each rank trains on, for data whose first input
feature is the sample's id (tests.support.data_files.write_shards). `chainrule-train` subprocesses import
it through PYTHONPATH: `+callbacks.seen._target_=tests.support.seen_samples.SeenSamples
+callbacks.seen.folder=<folder>`."""

from pathlib import Path

import lightning as L


class SeenSamples(L.Callback):
    """Appends `<epoch> <global step> <id> <id> ...` per training batch to `<folder>/rank<r>.txt`."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.folder.mkdir(parents=True, exist_ok=True)
        ids = " ".join(str(int(i)) for i in batch[0][:, 0])
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.current_epoch} {trainer.global_step} {ids}\n")


def read_seen(folder: Path) -> dict[int, list[list[int]]]:
    """{epoch: the ids of each batch, all ranks' batches together}."""
    seen: dict[int, list[list[int]]] = {}
    for path in sorted(folder.glob("rank*.txt")):
        for line in path.read_text().splitlines():
            epoch, _, *ids = map(int, line.split())
            seen.setdefault(epoch, []).append(ids)
    return seen
