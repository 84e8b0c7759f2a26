"""Any torchvision classification model by name: untrained, or with torchvision's pretrained weights read
from the local torch hub cache (never downloaded here)."""

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from chainrule.core.errors import ConfigError, unknown_choice


def torchvision_classifier(
    name: str, input_shape: tuple[int, int, int], num_outputs: int, small_input: bool, weights: str | None
) -> nn.Module:
    """A torchvision classification model with its stem adapted to `input_shape` and a head of
    `num_outputs`.

    weights: None (random initialization), `DEFAULT` or the name of one of the model's weights
    (`IMAGENET1K_V1`): loaded from `$TORCH_HOME/hub/checkpoints/` under torchvision's file name; the
    classifier head is then replaced by a new one for `num_outputs`.

    ImageNet stems downsample 4x before the first block (7x7/2 conv + 3x3/2 max-pool), which leaves
    nothing of an 8x8 or 32x32 image; `small_input` swaps in a 3x3/1 conv and drops the first max-pool
    (a pretrained stem is then lost: keep small_input=false to fine-tune it).
    """
    choices = torchvision.models.list_models(module=torchvision.models)
    if name not in choices:
        raise unknown_choice("torchvision model", name, choices)
    if weights is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_outputs)
    else:
        model = pretrained(name, str(weights))
        _replace_head(model, name, len(model_weights(name, str(weights)).meta["categories"]), num_outputs)
    _adapt_stem(model, in_channels=input_shape[0], small_input=small_input, keep_filters=weights is not None)
    return model


def model_weights(name: str, weights: str) -> WeightsEnum:
    """Model `name`'s weights `weights`: `DEFAULT`, `IMAGENET1K_V1` or `ResNet18_Weights.IMAGENET1K_V1`."""
    enum = torchvision.models.get_model_weights(name)
    member = weights.removeprefix(f"{enum.__name__}.")
    if member not in enum.__members__:
        raise unknown_choice(f"model.weights of {name}", weights, list(enum.__members__))
    return enum[member]


def weights_file(weights: WeightsEnum) -> Path:
    """Where torchvision keeps `weights`: the torch hub cache ($TORCH_HOME/hub/checkpoints) under the
    file name of its download address."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def pretrained(name: str, weights: str) -> nn.Module:
    """Model `name` with `weights` from the hub cache; a missing file is an error, not a download (a
    compute node often has no network, and a stalled download would hang the job)."""
    chosen = model_weights(name, weights)
    path = weights_file(chosen)
    if not path.is_file():
        raise ConfigError(f"model.weights={weights}: {path.name} is not in {path.parent}; download "
                          f"{chosen.url} into that folder on a machine with network access (or point "
                          f"TORCH_HOME at a folder holding hub/checkpoints/{path.name})")
    with _weights_only_loading():
        try:
            return torchvision.models.get_model(name, weights=chosen)
        except (RuntimeError, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"model.weights={weights}: cannot load {path} ({first}); delete it and "
                              f"download {chosen.url} again") from None


@contextmanager
def _weights_only_loading() -> Iterator[None]:
    """torch.hub loads cached weights with weights_only=False; chainrule loads only tensors and plain
    containers (as chainrule.checkpointing.io does), which torch's own switch enforces for every load."""
    switches = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {key: os.environ.pop(key, None) for key in switches}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ.update({key: value for key, value in saved.items() if value is not None})


def _replace_head(model: nn.Module, name: str, categories: int, num_outputs: int) -> None:
    """Swap the classifier (the last linear or 1x1-conv layer with one output per pretrained category) for
    a freshly initialized one with `num_outputs`."""
    heads = [(n, m) for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == categories)
             or (isinstance(m, nn.Conv2d) and m.out_channels == categories and m.kernel_size == (1, 1))]
    if not heads:
        raise ConfigError(f"model.weights: cannot find the classifier head of {name} to replace; use "
                          f"model.weights=null or another model")
    head_name, head = heads[-1]
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_outputs, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_outputs, 1, bias=head.bias is not None)
    _replace(model, head_name, new)


def _adapt_stem(model: nn.Module, in_channels: int, small_input: bool, keep_filters: bool) -> None:
    first_conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    name, conv = first_conv
    kernel, stride, padding = ((3, 3), (1, 1), (1, 1)) if small_input else (conv.kernel_size, conv.stride, conv.padding)
    if in_channels != conv.in_channels or small_input:
        new = nn.Conv2d(in_channels, conv.out_channels, kernel, stride, padding, bias=conv.bias is not None)
        if keep_filters and not small_input:
            _carry_over_filters(conv, new)
        _replace(model, name, new)
    if small_input:
        pool = next((n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)), None)
        if pool is not None:
            _replace(model, pool, nn.Identity())


def _replace(model: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _carry_over_filters(old: nn.Conv2d, new: nn.Conv2d) -> None:
    """Keep (pretrained) stem filters for another number of input channels, as timm does: one channel gets
    the sum over the old ones (a grey image seen as equal RGB), others the old ones cycled and rescaled so
    that activations keep their scale."""
    with torch.no_grad():
        if new.in_channels == 1:
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
        else:
            repeats = math.ceil(new.in_channels / old.in_channels)
            cycled = old.weight.repeat(1, repeats, 1, 1)[:, :new.in_channels]
            new.weight.copy_(cycled * old.in_channels / new.in_channels)
        if old.bias is not None:
            new.bias.copy_(old.bias)
