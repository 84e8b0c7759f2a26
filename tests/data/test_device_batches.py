"""In-memory data on the device (`data.on_device=true`): batches gathered there are exactly the batches a
DataLoader gives, for training (reshuffled each epoch, resumed mid-epoch, sharded over ranks and
accumulation steps) and evaluation, and a default run trains to the same weights either way."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from chainrule.core.errors import ConfigError
from chainrule.data.base import InMemoryDataModule
from chainrule.data.device_batches import DeviceBatches
from chainrule.data.synthetic import SyntheticDataModule
from tests.support.configs import compose_config, conf_options
from tests.support.training import fit_bare

LOADING = {"num_workers": 0, "persistent_workers": False, "pin_memory": False, "prefetch_factor": 2,
           "flip": False, "crop_padding": 0}


def synthetic(on_device: bool, world: int = 1, rank: int = 0, accumulation: int = 1) -> SyntheticDataModule:
    """203 samples -> 123 for training (5 global batches of 24), 40 validation, 40 test; attached to a
    stand-in for the trainer of rank `rank` of `world` data-parallel ranks on the CPU."""
    datamodule = SyntheticDataModule(num_samples=203, input_shape=(2, 3), num_classes=4, batch_size=24,
                                     val_fraction=0.2, test_fraction=0.2, split_seed=5, **LOADING,
                                     on_device=on_device, folds=None, fold=None)
    datamodule.trainer = SimpleNamespace(
        distributed_sampler_kwargs={"num_replicas": world, "rank": rank},
        accumulate_grad_batches=accumulation, strategy=SimpleNamespace(root_device=torch.device("cpu")),
        overfit_batches=0)
    datamodule.setup("fit")
    return datamodule


def epoch(loader, number: int) -> list[list[torch.Tensor]]:
    _set_sampler_epoch(loader, number)  # as Lightning's fit loop does before each epoch
    return list(loader)


def assert_same_batches(device: list[list[torch.Tensor]], loaded: list[list[torch.Tensor]]) -> None:
    assert len(device) == len(loaded) > 0
    for (x, y), (x_loaded, y_loaded) in zip(device, loaded, strict=True):
        assert torch.equal(x, x_loaded) and torch.equal(y, y_loaded)
        assert x.dtype == x_loaded.dtype and y.dtype == y_loaded.dtype


@pytest.mark.parametrize("world, accumulation", [(1, 1), (2, 1), (2, 2), (1, 3)])
def test_training_batches_on_the_device_are_the_dataloaders_in_every_epoch(world: int,
                                                                           accumulation: int) -> None:
    for rank in range(world):
        device = synthetic(True, world, rank, accumulation).train_dataloader()
        loaded = synthetic(False, world, rank, accumulation).train_dataloader()
        assert isinstance(device, DeviceBatches) and isinstance(loaded, DataLoader)
        assert len(device) == len(loaded) == 5 * accumulation
        first, second = epoch(device, 0), epoch(device, 1)
        assert_same_batches(first, epoch(loaded, 0))
        assert_same_batches(second, epoch(loaded, 1))
        assert not torch.equal(first[0][0], second[0][0])  # reshuffled


def test_a_resumed_epoch_continues_with_the_batches_of_the_uninterrupted_one() -> None:
    uninterrupted = epoch(synthetic(True, world=2, rank=1, accumulation=2).train_dataloader(), 1)
    for on_device in (True, False):
        datamodule = synthetic(on_device, world=2, rank=1, accumulation=2)
        datamodule.load_state_dict({"epoch": 1, "batches": 3})  # a checkpoint after 3 micro-batches
        loader = datamodule.train_dataloader()
        assert len(loader) == len(uninterrupted)  # Lightning counts the batches already done
        assert_same_batches(list(loader), uninterrupted[3:])
        assert_same_batches(epoch(loader, 2), epoch(synthetic(True, 2, 1, 2).train_dataloader(), 2))


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("world", [1, 2])
def test_evaluation_batches_on_the_device_are_the_dataloaders(split: str, world: int) -> None:
    for rank in range(world):
        device = getattr(synthetic(True, world, rank), f"{split}_dataloader")()
        loaded = getattr(synthetic(False, world, rank), f"{split}_dataloader")()
        assert len(device) == len(loaded)
        assert_same_batches(list(device), list(loaded))
        assert_same_batches(list(device), list(device))  # every pass the same


def test_the_split_is_copied_to_a_device_once() -> None:
    datamodule = synthetic(True)
    assert datamodule.device_tensors("train") is datamodule.device_tensors("train")
    # On the CPU the split itself is used: no second copy in memory.
    assert datamodule.device_tensors("train")[0].data_ptr() == datamodule.splits.train.x.data_ptr()


def test_the_device_loader_is_not_a_stateful_loader_for_lightning() -> None:
    # Lightning would save and restore a loader with state_dict itself; the position in the epoch travels
    # with the data module's state instead (chainrule.data.resumable).
    assert not hasattr(DeviceBatches, "state_dict") and not hasattr(DeviceBatches, "load_state_dict")


def test_worker_processes_and_batches_on_the_device_are_refused_together() -> None:
    message = (r"data.on_device=true reads batches from device memory without worker processes, but "
               r"data.num_workers=2; set data.num_workers=0, or data.on_device=false to load with workers")
    with pytest.raises(ConfigError, match=message):
        SyntheticDataModule(num_samples=20, input_shape=(2,), num_classes=2, batch_size=4, val_fraction=0.2,
                            test_fraction=0.2, split_seed=0, **{**LOADING, "num_workers": 2}, on_device=True,
                            folds=None, fold=None)


@pytest.mark.parametrize("option", conf_options("data"))
def test_every_in_memory_data_option_keeps_its_split_on_the_device(option: str) -> None:
    from hydra.utils import get_object

    data = compose_config(f"data={option}").data
    in_memory = issubclass(get_object(data._target_), InMemoryDataModule)
    assert ("on_device" in data) == in_memory  # the key exists exactly where a constructor takes it
    assert not in_memory or (data.on_device is True and data.num_workers == 0)


@pytest.mark.slow
def test_the_default_run_trains_to_the_same_weights_from_the_device_and_from_a_dataloader(tmp_path) -> None:
    # The default run (digits, an MLP with dropout, AdamW, warm-up and cosine), 4 of its 20 epochs.
    weights = {}
    for on_device in (False, True):
        cfg = compose_config(f"data.on_device={on_device}", "trainer.max_epochs=4",
                             "trainer.enable_progress_bar=false", "logger=csv",
                             f"paths.output_dir={tmp_path / str(on_device)}", f"paths.root_dir={tmp_path}")
        L.seed_everything(cfg.seed, verbose=False)
        fitted = fit_bare(cfg)
        assert isinstance(fitted.trainer.train_dataloader, DeviceBatches if on_device else DataLoader)
        weights[on_device] = fitted.task.state_dict()
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][k], weights[False][k]) for k in weights[True])
