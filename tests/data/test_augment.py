"""Flip and crop of in-memory image batches on the device (data.flip, data.crop_padding): what each does to
an image, and draws that are the same for any number of ranks and accumulation steps, and after a resume."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from chainrule.core.errors import ConfigError
from chainrule.data.augment import draw_flip_and_crop, flip_and_crop
from chainrule.data.synthetic import SyntheticDataModule
from chainrule.data.tokens import SyntheticTokensDataModule

LOADING = {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "prefetch_factor": 2}


def images(on_device: bool = True, flip: bool = True, crop_padding: int = 2) -> SyntheticDataModule:
    """203 images of 2 x 5 x 6 -> 123 for training: 5 global batches of 24 per epoch."""
    return SyntheticDataModule(num_samples=203, input_shape=(2, 5, 6), num_classes=3, batch_size=24,
                               val_fraction=0.2, test_fraction=0.2, split_seed=5, **LOADING,
                               on_device=on_device, flip=flip, crop_padding=crop_padding, folds=None,
                               fold=None)


def test_a_crop_of_the_padded_image_mirrored_where_drawn() -> None:
    x = torch.randn(6, 3, 5, 7)
    flips, corners = draw_flip_and_crop(seed=1, epoch=0, step=0, global_batch_size=6, flip=True, padding=2)
    assert flips.any() and not flips.all() and corners.max() <= 4
    out = flip_and_crop(x, flips, corners, padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i, ((row, column), flipped) in enumerate(zip(corners.tolist(), flips.tolist())):
        expected = padded[i, :, row:row + 5, column:column + 7]
        assert torch.equal(out[i], expected.flip(-1) if flipped else expected)


def test_without_flip_and_padding_the_images_stay_as_they_are() -> None:
    x = torch.randn(4, 1, 3, 3)
    flips, corners = draw_flip_and_crop(seed=1, epoch=0, step=0, global_batch_size=4, flip=False, padding=0)
    assert torch.equal(flip_and_crop(x, flips, corners, padding=0), x)


def augmented_steps(world: int, accumulation: int, epoch: int = 1) -> list[torch.Tensor]:
    """Each optimizer step's global batch as the ranks see it after the hook, put back in its order."""
    steps: dict[int, torch.Tensor] = {}
    for rank in range(world):
        datamodule = images()
        progress = SimpleNamespace(ready=0)
        datamodule.trainer = SimpleNamespace(
            distributed_sampler_kwargs={"num_replicas": world, "rank": rank},
            accumulate_grad_batches=accumulation, strategy=SimpleNamespace(root_device=torch.device("cpu")),
            training=True, overfit_batches=0,
            fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
                batch_progress=SimpleNamespace(current=progress))))
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for n, batch in enumerate(loader):
            progress.ready = n  # as Lightning counts the batch in the hook
            x, _ = datamodule.on_after_batch_transfer(batch, 0)
            step, part = loader.sampler.locate(n)
            steps.setdefault(step, torch.empty(24, *x.shape[1:]))[part] = x
    return [steps[step] for step in sorted(steps)]


@pytest.mark.parametrize("world, accumulation", [(2, 1), (2, 2), (1, 3)])
def test_each_step_is_augmented_alike_for_any_number_of_ranks_and_accumulation(world: int,
                                                                              accumulation: int) -> None:
    single = augmented_steps(1, 1)
    assert len(single) == 5
    sharded = augmented_steps(world, accumulation)
    assert all(torch.equal(a, b) for a, b in zip(single, sharded, strict=True))
    plain = [x for x, _ in images(flip=False, crop_padding=0).train_dataloader()]
    assert not torch.equal(single[0], plain[0])  # the batches were augmented


class Recorder(L.LightningModule):
    """Records the inputs of each training step as the model sees them; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch[0].clone())
        return self.weight.sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path: Path, steps: int, on_device: bool, ckpt_path: Path | None = None) -> list[torch.Tensor]:
    model = Recorder()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, save_last=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[checkpoints])
    trainer.fit(model, datamodule=images(on_device), ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize("on_device", [True, False])
def test_a_run_resumed_mid_epoch_sees_the_augmented_batches_of_the_uninterrupted_one(tmp_path: Path,
                                                                                   on_device: bool) -> None:
    uninterrupted = fit(tmp_path / "full", 8, on_device)  # 8 steps: into the second epoch
    checkpoint = next((tmp_path / "full").glob("*step=3.ckpt"))  # after 3 of the first epoch's 5 batches
    resumed = fit(tmp_path / "resumed", 8, on_device, ckpt_path=checkpoint)
    assert len(resumed) == 5
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted[3:], resumed, strict=True))
    # And as the hook draws them outside Lightning: Lightning's batch count is the one the hook uses.
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted[:5], augmented_steps(1, 1, epoch=0)))


def test_augmenting_data_that_are_not_images_is_refused() -> None:
    tokens = SyntheticTokensDataModule(num_sequences=20, seq_len=8, vocab_size=5, branching=2, batch_size=4,
                                       val_fraction=0.2, test_fraction=0.2, split_seed=0, **LOADING,
                                       on_device=True, flip=True, crop_padding=0, folds=None, fold=None)
    with pytest.raises(ConfigError, match=r"augment images .* inputs are \(8,\): set data.flip=false"):
        tokens.setup("fit")


def test_a_negative_crop_padding_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.crop_padding must be an integer >= 0"):
        images(crop_padding=-1)
