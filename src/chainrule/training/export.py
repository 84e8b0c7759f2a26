"""A trained model as a file that runs without chainrule: ONNX (for ONNX Runtime and other runtimes) or
torch.export's ExportedProgram (`.pt2`, `torch.export.load(path).module()`), with a variable batch size;
and the check that the file computes what the eager model computes."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from chainrule.core.errors import ChainruleError, ConfigError, unknown_choice

SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
INPUT, OUTPUT = "input", "output"  # the ONNX graph's names


def check_format(format: str) -> None:
    """Refuse an unknown format, or ONNX without its packages, before anything is built."""
    if format not in SUFFIXES:
        raise unknown_choice("format", format, list(SUFFIXES))
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as missing:
            raise ConfigError(f"format=onnx needs the onnx, onnxscript and onnxruntime packages "
                              f"({missing.name} is missing): pip install 'chainrule[export]'; or "
                              f"format=torch_export") from None


def export(model: nn.Module, example: torch.Tensor, format: str, path: Path) -> Path:
    """Write `model` (in eval mode) traced on `example` (a batch) to `path`, its first dimension (the
    batch) left variable."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = ({0: Dim("batch")},)
    try:
        with warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir"):
            warnings.simplefilter("ignore")  # the exporters' notes on their own internals
            if format == "onnx":
                torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=[INPUT],
                                  output_names=[OUTPUT], dynamic_shapes=batch, external_data=False,
                                  verbose=False)
            else:
                torch.export.save(torch.export.export(model, (example,), dynamic_shapes=batch), str(path))
    except Exception as error:  # the exporters raise many types, each with a long explanation
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ChainruleError(f"cannot export {type(model).__name__} as {format}: {first}") from error
    return path


@contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The ONNX optimizer logs each of its passes at INFO, which the console (INFO) would show."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run_exported(path: Path, format: str, inputs: torch.Tensor) -> torch.Tensor:
    """The exported model's output for `inputs`, computed by ONNX Runtime or the loaded ExportedProgram."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run([OUTPUT], {INPUT: inputs.cpu().numpy()})[0])
    with torch.no_grad():
        return torch.export.load(str(path)).module()(inputs)


def max_difference(model: nn.Module, path: Path, format: str, inputs: torch.Tensor) -> float:
    """The largest absolute difference between the exported and the eager model's outputs on `inputs`."""
    model.eval()
    with torch.no_grad():
        expected = model(inputs)
    return (run_exported(path, format, inputs).to(expected.dtype) - expected).abs().max().item()
