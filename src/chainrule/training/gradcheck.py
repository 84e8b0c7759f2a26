"""Gradient checking: compare autograd's gradients with central finite differences, in float64.

Takes the same config and overrides as `chainrule-train`, builds the configured model and loss, and checks
the gradient of the loss on a small training batch with respect to every parameter tensor and the input.
A layer whose backward is wrong (a custom autograd.Function, a hand-written gradient) shows up by name.
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn

from chainrule.core import console
from chainrule.core.errors import ChainruleError

INPUT = "input"
KINK_HALVINGS = 4  # step halvings tried before an element counts as sitting on a kink


class GradientCheckError(ChainruleError):
    """Autograd and finite differences disagree: some backward computes the wrong gradient."""


@dataclass(frozen=True)
class TensorCheck:
    """The comparison for one tensor (a parameter, or the input)."""

    layer: str  # module path, or "input"
    tensor: str  # parameter name inside the layer ("weight", "bias"); "" for the input
    checked: int  # elements compared
    total: int
    max_grad: float  # largest |autograd gradient| over the whole tensor
    max_abs_error: float  # largest |autograd - finite difference| over the checked elements off kinks
    kinks: int  # checked elements left out: sitting on a kink (ReLU at 0, max-pool tie)
    rel_error: float  # max_abs_error / max_grad


@dataclass(frozen=True)
class GradcheckReport:
    rows: list[TensorCheck]
    threshold: float
    loss: float

    @property
    def failures(self) -> list[TensorCheck]:
        return [row for row in self.rows if not row.rel_error <= self.threshold]  # NaN fails too

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed_layers(self) -> list[str]:
        return list(dict.fromkeys(row.layer for row in self.failures))


def check_gradients(
    model: nn.Module,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor | None,
    batch_size: int,
    max_elements: int,
    eps: float,
    threshold: float,
    input_jitter: float,
    seed: int,
) -> GradcheckReport:
    """Check d loss(model(x), target) / d(each parameter tensor and x) against central differences.

    Works on float64 copies of `model` and `loss` in eval mode (dropout off, batch norm on running
    statistics: a deterministic function); the originals are untouched. Uses the first `batch_size`
    samples; `targets=None` means the target is the input itself (reconstruction). Tensors with more than
    `max_elements` elements are checked on a random sample of that many (from `seed`). `input_jitter`
    (std of Gaussian noise added to float inputs) moves ties in ReLU/max-pool off their kinks, where a
    finite difference is not a derivative. The relative error of a tensor is its largest absolute error
    divided by its largest gradient entry, so near-zero entries do not turn rounding noise into failures.
    Elements on a kink (the estimate keeps moving as the step shrinks) are left out and counted; a tensor
    with nothing left to judge fails.
    """
    generator = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).to(torch.float64).eval()
    if isinstance(loss, nn.Module):
        loss = copy.deepcopy(loss).to(torch.float64).eval()
    x = inputs[:batch_size].detach().clone()
    y = None if targets is None else targets[:batch_size].detach().clone()
    if x.is_floating_point():
        x = x.to(torch.float64)
        if input_jitter:
            x = x + input_jitter * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x.requires_grad_(True)
    if y is not None and y.is_floating_point():
        y = y.to(torch.float64)

    def objective() -> torch.Tensor:
        return loss(model(x), x if y is None else y)

    # (layer, tensor name, tensor); integer inputs (token ids) have no gradient to check
    checked = [(*_split(name), p) for name, p in model.named_parameters() if p.requires_grad]
    if x.requires_grad:
        checked.append((INPUT, "", x))
    value = objective()
    grads = torch.autograd.grad(value, [t for _, _, t in checked], allow_unused=True)
    base = value.item()

    rows = []
    for (layer, param, tensor), grad in zip(checked, grads):
        grad = torch.zeros_like(tensor) if grad is None else grad  # unused: finite differences must give 0
        rows.append(_compare(layer, param, tensor, grad, objective, base, max_elements, eps, threshold,
                             generator))
    return GradcheckReport(rows, threshold, base)


def _split(parameter_name: str) -> tuple[str, str]:
    layer, _, tensor = parameter_name.rpartition(".")
    return layer or "(model)", tensor


def _compare(layer: str, param: str, tensor: torch.Tensor, grad: torch.Tensor,
             objective: Callable[[], torch.Tensor], base: float, max_elements: int, eps: float,
             threshold: float, generator: torch.Generator) -> TensorCheck:
    flat = tensor.detach().view(-1)  # shares storage: writing it perturbs the model (or the input)
    analytic = grad.detach().reshape(-1).cpu()
    n = flat.numel()
    index = torch.arange(n) if n <= max_elements else torch.randperm(n, generator=generator)[:max_elements]
    scale = analytic.abs().max().item() if n else 0.0

    def central(i: int, h: float) -> float:
        original = flat[i].item()
        flat[i] = original + h
        plus = objective().item()
        flat[i] = original - h
        minus = objective().item()
        flat[i] = original
        return (plus - minus) / (2 * h)

    numeric, settled = [], []
    with torch.no_grad():
        for i in index.tolist():
            # A ReLU or max-pool tie within the step of its kink bends the secant; the estimate then moves
            # when the step shrinks. Halve the step until two estimates agree (the kink is outside), or give
            # up after KINK_HALVINGS and leave the element out. Agreement allows for float64 rounding of the
            # loss, which grows as the step shrinks.
            h, previous = eps, central(i, eps)
            for _ in range(KINK_HALVINGS):
                h /= 2
                estimate = central(i, h)
                rounding = 8 * torch.finfo(torch.float64).eps * max(abs(base), 1.0) / h
                if abs(estimate - previous) <= threshold * scale / 2 + rounding:
                    break
                previous = estimate
            else:
                numeric.append(estimate)
                settled.append(False)
                continue
            numeric.append(estimate)
            settled.append(True)
    keep = torch.tensor(settled, dtype=torch.bool)
    error = (analytic[index] - torch.tensor(numeric, dtype=torch.float64))[keep].abs()
    kinks = int((~keep).sum())
    if not len(error):
        return TensorCheck(layer, param, len(index), n, scale, math.nan, kinks, 0.0 if n == 0 else math.nan)
    worst = error.max().item()
    rel = worst / scale if scale > 0 else (0.0 if worst == 0 else math.inf)
    return TensorCheck(layer, param, len(index), n, scale, worst, kinks, rel)


def print_report(report: GradcheckReport) -> None:
    table = Table(title=f"gradient check (float64, loss {report.loss:.4g}, threshold {report.threshold:.0e})")
    table.add_column("layer", no_wrap=True)
    for column in ("tensor", "checked", "max |grad|", "max abs error", "kinks", "max rel error", ""):
        table.add_column(column, justify="left" if column in ("tensor", "") else "right", no_wrap=True)
    for row in report.rows:
        ok = row.rel_error <= report.threshold
        table.add_row(row.layer, row.tensor, f"{row.checked}/{row.total}", f"{row.max_grad:.3e}",
                      f"{row.max_abs_error:.2e}", str(row.kinks), f"{row.rel_error:.2e}",
                      "ok" if ok else "[bold red]FAIL[/]")
    console.say(console.render(table))
