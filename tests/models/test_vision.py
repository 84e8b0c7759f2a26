"""torchvision models with pretrained weights from the local torch hub cache: loaded exactly, the head
replaced for the data's classes, and one line naming the file and the folder when it is not there."""

from pathlib import Path

import pytest
import torch
import torchvision

from chainrule.core.errors import ConfigError
from chainrule.models.vision import model_weights, torchvision_classifier, weights_file
from tests.support.processes import ONE_THREAD, run_cli

RESNET18_FILE = "resnet18-f37072fd.pth"  # the name torchvision downloads ResNet18_Weights.IMAGENET1K_V1 as


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache in TORCH_HOME=tmp_path: $TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def cached_resnet18(hub_cache: Path) -> dict[str, torch.Tensor]:
    """A randomly initialized resnet18 saved under the file name torchvision expects; its state dict."""
    hub_cache.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, hub_cache / RESNET18_FILE)
    return state


def test_the_file_is_where_torchvision_keeps_it(hub_cache: Path) -> None:
    assert weights_file(model_weights("resnet18", "DEFAULT")) == hub_cache / RESNET18_FILE
    named_fully = model_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    assert weights_file(named_fully) == hub_cache / RESNET18_FILE


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1"])
def test_the_backbone_equals_the_cached_weights_and_the_head_fits_the_classes(
        cached_resnet18: dict[str, torch.Tensor], weights: str) -> None:
    model = torchvision_classifier("resnet18", (3, 32, 32), 10, small_input=False, weights=weights)
    loaded = model.state_dict()
    backbone = [k for k in cached_resnet18 if not k.startswith("fc.")]
    assert all(torch.equal(loaded[k], cached_resnet18[k]) for k in backbone)
    assert model.fc.weight.shape == (10, 512) and model.fc.bias.shape == (10,)


def test_grey_images_keep_the_pretrained_stem_summed_over_colours(
        cached_resnet18: dict[str, torch.Tensor]) -> None:
    model = torchvision_classifier("resnet18", (1, 28, 28), 10, small_input=False, weights="DEFAULT")
    assert torch.allclose(model.conv1.weight, cached_resnet18["conv1.weight"].sum(dim=1, keepdim=True))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_no_cached_file_is_one_line_naming_the_file_and_the_folder(hub_cache: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        torchvision_classifier("resnet18", (3, 32, 32), 10, small_input=False, weights="DEFAULT")
    message = str(refused.value)
    assert f"{RESNET18_FILE} is not in {hub_cache}" in message
    assert "https://download.pytorch.org/models/" + RESNET18_FILE in message and "\n" not in message


def test_an_unknown_weights_name_lists_the_model_s_weights() -> None:
    with pytest.raises(ConfigError, match="unknown model.weights of resnet18 'IMAGENET'; choose one of: "
                                          "DEFAULT, IMAGENET1K_V1"):
        torchvision_classifier("resnet18", (3, 32, 32), 10, small_input=False, weights="IMAGENET")


@pytest.mark.slow
def test_training_with_uncached_weights_stops_at_once_with_one_line(tmp_path: Path) -> None:
    result = run_cli("chainrule-train", "model=torchvision", "model.weights=DEFAULT", "logger=none",
                     cwd=tmp_path, env={"TORCH_HOME": str(tmp_path / "torch"), **ONE_THREAD}, timeout=120)
    assert result.returncode == 2
    expected = (f"chainrule: error: model.weights=DEFAULT: {RESNET18_FILE} is not in "
                f"{tmp_path}/torch/hub/checkpoints; download "
                f"https://download.pytorch.org/models/{RESNET18_FILE} into that folder on a machine with "
                f"network access (or point TORCH_HOME at a folder holding hub/checkpoints/{RESNET18_FILE})")
    assert result.stderr.strip().splitlines() == [expected]
