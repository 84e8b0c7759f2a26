import torchvision
from torch import nn

from chainrule.core.errors import unknown_choice


def torchvision_classifier(
    name: str, input_shape: tuple[int, int, int], num_outputs: int, small_input: bool
) -> nn.Module:
    """A torchvision classification model, untrained, with its stem adapted to `input_shape`.

    ImageNet stems downsample 4x before the first block (7x7/2 conv + 3x3/2 max-pool), which leaves
    nothing of an 8x8 or 32x32 image; `small_input` swaps in a 3x3/1 conv and drops the first max-pool.
    """
    choices = torchvision.models.list_models(module=torchvision.models)
    if name not in choices:
        raise unknown_choice("torchvision model", name, choices)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_outputs)
    _adapt_stem(model, in_channels=input_shape[0], small_input=small_input)
    return model


def _adapt_stem(model: nn.Module, in_channels: int, small_input: bool) -> None:
    first_conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    name, conv = first_conv
    kernel, stride, padding = ((3, 3), (1, 1), (1, 1)) if small_input else (conv.kernel_size, conv.stride, conv.padding)
    if in_channels != conv.in_channels or small_input:
        _replace(model, name, nn.Conv2d(in_channels, conv.out_channels, kernel, stride, padding, bias=conv.bias is not None))
    if small_input:
        pool = next((n for n, m in model.named_modules() if isinstance(m, nn.MaxPool2d)), None)
        if pool is not None:
            _replace(model, pool, nn.Identity())


def _replace(model: nn.Module, dotted_name: str, new: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
