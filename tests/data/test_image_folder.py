"""data=image_folder: class folders of PNG and JPEG files, split by folders or by fractions, augmented
per image from (seed, epoch, index) in any worker, and trained on."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from chainrule.core.errors import ConfigError, DataNotFoundError
from chainrule.data.draws import draw_seed
from chainrule.data.image_folder import discover
from tests.support.configs import compose_config
from tests.support.data_files import IMAGE_CLASSES, write_images
from tests.support.training import fit_bare

QUICK = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "trainer.accelerator=cpu", "logger=none", "callbacks=none", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("flat"), per_class=10)


@pytest.fixture(scope="module")
def split_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("splits"), per_class=4, splits=("train", "val"))


def datamodule(data_dir: Path, *overrides: str):
    cfg = compose_config("data=image_folder", f"data.data_dir={data_dir}", "data.image_size=16", *overrides)
    return instantiate(cfg.data)


def test_one_folder_is_split_by_the_fractions_without_overlap(flat: Path) -> None:
    classes, splits = discover(flat, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert classes == [f"class{c}" for c in range(IMAGE_CLASSES)]
    sizes = {split: len(files) for split, files in splits.items()}
    assert sizes == {"val": 6, "test": 3, "train": 21}
    paths = [path for files in splits.values() for path, _ in files]
    assert len(set(paths)) == 30 and {p.rsplit(".", 1)[1] for p in paths} == {"png", "jpg"}
    assert discover(flat, 0.2, 0.1, seed=3) == (classes, splits)  # the split is a function of the seed
    assert discover(flat, 0.2, 0.1, seed=4)[1] != splits


def test_split_folders_are_used_and_a_missing_one_takes_its_fraction_of_train(split_folders: Path) -> None:
    _, splits = discover(split_folders, val_fraction=0.5, test_fraction=0.25, seed=0)
    assert all("/val/" in path for path, _ in splits["val"]) and len(splits["val"]) == 12
    assert len(splits["test"]) == 3 and len(splits["train"]) == 9  # test: a quarter of train/
    assert all("/train/" in path for path, _ in splits["train"] + splits["test"])


def test_augmentation_is_a_function_of_seed_epoch_and_index_in_any_worker(flat: Path) -> None:
    dm = datamodule(flat, "data.num_workers=0", "data.batch_size=8")
    train = dm.split_dataset("train")
    first, again = train[(2, draw_seed(1, 0, 2))], train[(2, draw_seed(1, 0, 2))]
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not torch.equal(first[0], train[(2, draw_seed(1, 1, 2))][0])  # another epoch, another crop
    assert first[0].shape == (3, 16, 16) and first[0].dtype == torch.float32 and 0 <= first[0].min()

    in_process = [batch for batch in dm.train_dataloader()]
    with_workers = datamodule(flat, "data.num_workers=2", "data.batch_size=8")
    workers = [batch for batch in with_workers.train_dataloader()]
    assert len(in_process) == 24 // 8
    for (x0, y0), (x2, y2) in zip(in_process, workers, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_transforms_that_do_not_give_the_input_shape_are_refused(flat: Path) -> None:
    # Resize alone keeps the 20x24 images' aspect ratio.
    resize_only = "data.eval_transform.transforms=[{_target_:torchvision.transforms.v2.Resize,size:16}]"
    dm = datamodule(flat, resize_only)
    with pytest.raises(ConfigError, match=r"data.eval_transform makes 3x16x19 images .* data.image_size=16"):
        dm.setup("fit")


def test_a_missing_folder_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no image folder at .*one folder of images per class"):
        datamodule(tmp_path / "nothing").setup("fit")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_cnn_trains_on_the_image_files_with_workers(flat: Path, compose_train) -> None:
    cfg = compose_train("data=image_folder", f"data.data_dir={flat}", "data.image_size=16",
                        "data.batch_size=8", "data.num_workers=2", "model=cnn", *QUICK)
    fitted = fit_bare(cfg)
    trainer = fitted.trainer
    trainer.test(fitted.task, datamodule=fitted.datamodule)
    assert trainer.global_step == 3 and fitted.datamodule.num_classes == IMAGE_CLASSES
    assert fitted.parameters_changed
    assert torch.isfinite(trainer.callback_metrics["test/loss"])
