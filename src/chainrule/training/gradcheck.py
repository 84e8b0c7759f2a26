"""Gradient checking: compare autograd's gradients with central finite differences, in float64, module by
module.

Takes the same config and overrides as `chainrule-train`, builds the configured model and loss, and runs a
small training batch through the model once, recording what each module received. Each module is then
checked on its own: autograd's vector-Jacobian product (the gradient of <v, module(x)> for a fixed random
v, with respect to the module's floating inputs x and its own parameters) against central differences. A
module whose backward is wrong (a custom autograd.Function, a hand-written gradient), with parameters or
without, is named by its path, and the correct layers before it, whose gradients its error spoils in
training, are not.
"""

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from rich.table import Table
from torch import nn

from chainrule.core import console
from chainrule.core.errors import ChainruleError
from chainrule.core.ranges import check_value

MODEL = "(model)"  # the model as a whole (the root module, whose path is "")
LOSS = "(loss)"
INPUT = "input"
KINK_HALVINGS = 4  # step halvings tried before an element counts as sitting on a kink
ROUNDING = 8 * torch.finfo(torch.float64).eps  # float64 rounding of one objective value, with a margin


class GradientCheckError(ChainruleError):
    """Autograd and finite differences disagree: some backward computes the wrong gradient."""


@dataclass(frozen=True)
class TensorCheck:
    """The comparison for one tensor of one module's check: an input of the module, or a parameter."""

    module: str  # module path in the model, MODEL for the model itself, LOSS for the loss
    compared: str  # "input" (or "input <position or keyword>"), or the parameter ("weight", "bias")
    checked: int  # elements compared
    total: int
    max_grad: float  # largest |autograd gradient| over the whole tensor
    max_abs_error: float  # largest |autograd - finite difference| over the checked elements off kinks
    kinks: int  # checked elements left out: sitting on a kink (ReLU at 0, max-pool tie)
    rel_error: float  # max_abs_error / max_grad; NaN when every checked element sat on a kink

    @property
    def label(self) -> str:
        return f"{self.module} {self.compared}"


def _inside(module: str, outer: str) -> bool:
    """Whether `module` is a submodule of `outer` (both as TensorCheck.module names them)."""
    if outer == MODEL:
        return module not in (MODEL, LOSS)
    return module.startswith(outer + ".")


@dataclass(frozen=True)
class GradcheckReport:
    rows: list[TensorCheck]  # modules innermost first, in the order their forward finished; the loss last
    threshold: float
    loss: float

    @property
    def failures(self) -> list[TensorCheck]:
        return [row for row in self.rows if not row.rel_error <= self.threshold]  # NaN fails too

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed_modules(self) -> list[str]:
        """The failing modules that contain no failing module: where a wrong backward is. A module around
        one fails too (its gradient passes through the wrong one) and is not named."""
        failing = list(dict.fromkeys(row.module for row in self.failures))
        return [m for m in failing if not any(_inside(other, m) for other in failing)]

    @property
    def summary(self) -> str:
        """One line: what passed, or which modules failed and why; each clause only where it applies."""
        return _failure_summary(self) if self.failures else _pass_summary(self)


def _failure_summary(report: GradcheckReport) -> str:
    # The named modules' own rows: the modules around them fail through them, and say nothing more.
    named = [row for row in report.failures if row.module in report.failed_modules]
    wrong = [row for row in named if not math.isnan(row.rel_error)]
    unjudged = [row for row in named if math.isnan(row.rel_error)]
    reasons = []
    if wrong:
        worst = max(wrong, key=lambda row: row.rel_error)
        reasons.append(f"autograd and finite differences disagree (worst: {worst.label}, relative error "
                       f"{worst.rel_error:.2e} > {report.threshold:.0e}); check the backward of those modules")
    if unjudged:
        reasons.append(f"every checked element of {', '.join(row.label for row in unjudged)} sat on a kink "
                       f"(a ReLU input at 0, a max-pool tie), so nothing was compared; raise "
                       f"gradcheck.max_elements or gradcheck.input_jitter")
    return f"gradient check failed in module(s) {', '.join(report.failed_modules)}: {'; '.join(reasons)}"


def _pass_summary(report: GradcheckReport) -> str:
    if not report.rows:
        return "gradient check passed: nothing to compare (no floating input, no parameter)"
    modules = len(dict.fromkeys(row.module for row in report.rows))
    worst = max(row.rel_error for row in report.rows)
    kinks = sum(row.kinks for row in report.rows)
    text = (f"gradient check passed: {len(report.rows)} tensors in {modules} modules, max relative error "
            f"{worst:.2e} <= {report.threshold:.0e}")
    return text + (f"; {kinks} checked elements sat on a kink and were left out" if kinks else "")


def check_settings(**settings: Any) -> None:
    """Raise ConfigError for the first of `settings` that no check could use: the ranges of the
    `gradcheck.*` keys, which the config is checked against before anything loads, hold for a caller
    without a config too."""
    for name, value in settings.items():
        check_value(f"gradcheck.{name}", value)


@dataclass(frozen=True)
class _Sampling:
    max_elements: int
    eps: float
    threshold: float
    generator: torch.Generator  # seeded: the same elements and vectors v on every run


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
    """Check the backward of every module of `model` that ran on the batch, each on its own, and of `loss`.

    Works on float64 copies of `model` and `loss` in eval mode (dropout off, batch norm on running
    statistics: a deterministic function); the originals are untouched. Uses the first `batch_size`
    samples; `targets=None` means the target is the input itself (reconstruction). `input_jitter` (std of
    Gaussian noise added to float inputs) moves ties in ReLU/max-pool off their kinks.

    One forward pass records each module's inputs at its first call. Each module is then checked alone
    (innermost first, in the order their forward finished): the gradient of <v, module(x)>, v a fixed
    random vector, with respect to its floating inputs x and its own parameters (a module with no floating
    input, such as one taking token ids: all parameters inside it, so that no code of its forward goes
    unchecked), against central differences. The loss is checked with respect to the model's output.
    Tensors with more than `max_elements` elements are checked on a random sample of that many (from
    `seed`). A tensor's relative error is its largest absolute error divided by its largest gradient entry,
    so near-zero entries do not turn rounding noise into failures. Elements on a kink are left out and
    counted; a tensor with nothing left to judge fails. Raises ConfigError for settings no check can use.
    """
    check_settings(batch_size=batch_size, max_elements=max_elements, eps=eps, threshold=threshold,
                   input_jitter=input_jitter)
    sampling = _Sampling(int(max_elements), eps, threshold, torch.Generator().manual_seed(seed))
    model = copy.deepcopy(model).to(torch.float64).eval()
    if isinstance(loss, nn.Module):
        loss = copy.deepcopy(loss).to(torch.float64).eval()
    x, y = _batch(inputs, targets, int(batch_size), input_jitter, sampling.generator)
    calls, output = _record_calls(model, x)
    rows = [row for call in calls for row in _check_module(call, sampling)]
    loss_rows, loss_value = _check_loss(loss, output, x if y is None else y, sampling)
    return GradcheckReport(rows + loss_rows, threshold, loss_value)


def _batch(inputs: torch.Tensor, targets: torch.Tensor | None, batch_size: int, input_jitter: float,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `batch_size` samples, floating ones in float64, the inputs with jitter."""
    x = inputs[:batch_size].detach().clone()
    y = None if targets is None else targets[:batch_size].detach().clone()
    if x.is_floating_point():
        x = x.to(torch.float64)
        if input_jitter:
            x = x + input_jitter * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    if y is not None and y.is_floating_point():
        y = y.to(torch.float64)
    return x, y


@dataclass(frozen=True)
class _Call:
    """A module's first call in the recorded forward pass: what it received."""

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict


def _copied(value: Any) -> Any:
    """`value` with every tensor in it (in tuples, lists, dicts) detached and copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copied(v) for v in value)
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    return value


def _record_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], torch.Tensor]:
    """Run model(x) once; return each module's first call, in the order the calls finished (innermost
    first), and the model's output. A module called again (a ReLU reused in a ResNet block) is checked at
    its first call: its backward is the same function."""
    received: dict[str, tuple] = {}
    calls: list[_Call] = []

    def before(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            # Copied before the module runs: an in-place module (ReLU(inplace=True)) overwrites its input.
            received.setdefault(name, (_copied(args), _copied(kwargs)))
        return hook

    def after(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if all(call.name != name for call in calls):
                calls.append(_Call(name, module, *received[name]))
        return hook

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(before(name), with_kwargs=True))
        handles.append(module.register_forward_hook(after(name), with_kwargs=True))
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def _floating(value: Any) -> Iterator[torch.Tensor]:
    """The floating-point tensors in `value` (a module's output: a tensor, or tuples, lists, dicts of them)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _floating(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floating(v)


def _leaf(value: torch.Tensor) -> torch.Tensor:
    # Contiguous: the finite differences perturb it through a flat view.
    return value.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)


def _as_leaves(call: _Call) -> tuple[list, dict, list[tuple[str, torch.Tensor]]]:
    """The call's arguments with each floating tensor replaced by a fresh leaf, and those leaves, named."""
    args, kwargs = list(call.args), dict(call.kwargs)
    leaves: list[tuple[str, torch.Tensor]] = []
    for where, keys in ((args, range(len(args))), (kwargs, list(kwargs))):
        for key in keys:
            if isinstance(where[key], torch.Tensor) and where[key].is_floating_point():
                where[key] = _leaf(where[key])
                leaves.append((f"{INPUT} {key}", where[key]))
    if len(leaves) == 1:
        leaves = [(INPUT, leaves[0][1])]
    return args, kwargs, leaves


def _check_module(call: _Call, sampling: _Sampling) -> list[TensorCheck]:
    """Check one module alone, at the inputs it received: d<v, module(x)> / d(x and its parameters)."""
    args, kwargs, checked = _as_leaves(call)
    # Without a floating input (token ids), the parameters inside the module stand in for it: else the code
    # of its forward between its input and its submodules would go unchecked.
    own = call.module.named_parameters(recurse=not checked)
    checked += [(name, p) for name, p in own if p.requires_grad]

    def run() -> Any:
        # Fresh copies: a module that works in place must not change the tensors being perturbed.
        return call.module(*[_clone(a) for a in args], **{k: _clone(v) for k, v in kwargs.items()})

    with torch.no_grad():
        outputs = list(_floating(run()))
    if not outputs:  # nothing differentiable comes out (indices, a mask)
        return []
    vectors = [torch.randn(o.shape, generator=sampling.generator, dtype=o.dtype) for o in outputs]
    magnitude = sum((v.abs() * o.abs()).sum().item() for v, o in zip(vectors, outputs))

    def objective() -> torch.Tensor:
        return torch.stack([(v * o).sum() for v, o in zip(vectors, _floating(run()))]).sum()

    return _compare_all(call.name or MODEL, checked, objective, magnitude, sampling)


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _check_loss(loss: Callable, output: torch.Tensor, target: torch.Tensor,
                sampling: _Sampling) -> tuple[list[TensorCheck], float]:
    """Check d loss(output, target) / d output; return the rows and the loss value."""
    prediction = _leaf(output)
    target = target.detach()

    def objective() -> torch.Tensor:
        return loss(prediction.clone(), target)

    with torch.no_grad():
        value = objective().item()
    return _compare_all(LOSS, [(INPUT, prediction)], objective, abs(value), sampling), value


def _compare_all(module: str, checked: list[tuple[str, torch.Tensor]], objective: Callable[[], torch.Tensor],
                 magnitude: float, sampling: _Sampling) -> list[TensorCheck]:
    """Autograd's gradient of the scalar `objective` against central differences, for each checked tensor.
    `magnitude` bounds the objective's terms, for its rounding error."""
    if not checked:
        return []
    value = objective()
    grads = [None] * len(checked)
    if value.requires_grad:  # a module whose output does not depend on anything checked: all gradients 0
        grads = torch.autograd.grad(value, [t for _, t in checked], allow_unused=True)
    with torch.no_grad():  # the unperturbed value as the perturbed ones are computed, to the last bit
        base = objective().item()
    rounding = ROUNDING * max(magnitude, abs(base), 1.0)
    rows = []
    for (name, tensor), grad in zip(checked, grads):
        grad = torch.zeros_like(tensor) if grad is None else grad  # unused: finite differences must give 0
        rows.append(_compare(module, name, tensor, grad, objective, base, rounding, sampling))
    return rows


def _compare(module: str, name: str, tensor: torch.Tensor, grad: torch.Tensor,
             objective: Callable[[], torch.Tensor], base: float, rounding: float,
             sampling: _Sampling) -> TensorCheck:
    flat = tensor.detach().view(-1)  # shares storage: writing it perturbs the module (or its input)
    analytic = grad.detach().reshape(-1).cpu()
    n = flat.numel()
    index = torch.arange(n) if n <= sampling.max_elements else \
        torch.randperm(n, generator=sampling.generator)[:sampling.max_elements]
    scale = analytic.abs().max().item() if n else 0.0
    tolerance = sampling.threshold * scale / 2
    numeric, settled = [], []
    with torch.no_grad():
        for i in index.tolist():
            estimate, off_kink = _central_difference(flat, i, objective, base, sampling.eps, tolerance, rounding)
            numeric.append(estimate)
            settled.append(off_kink)
    keep = torch.tensor(settled, dtype=torch.bool)
    error = (analytic[index] - torch.tensor(numeric, dtype=torch.float64))[keep].abs()
    kinks = int((~keep).sum())
    if not len(error):
        return TensorCheck(module, name, len(index), n, scale, math.nan, kinks, 0.0 if n == 0 else math.nan)
    worst = error.max().item()
    rel = worst / scale if scale > 0 else (0.0 if worst == 0 else math.inf)
    return TensorCheck(module, name, len(index), n, scale, worst, kinks, rel)


def _central_difference(flat: torch.Tensor, i: int, objective: Callable[[], torch.Tensor], base: float,
                        eps: float, tolerance: float, rounding: float) -> tuple[float, bool]:
    """d objective / d flat[i] by central differences, and whether it can be judged (not on a kink).

    A ReLU or max-pool kink within the step bends the secant: the estimate moves when the step shrinks. A
    kink exactly at the element (a ReLU input at 0, tied max-pool inputs, common inside a model) does not
    move it, but leaves the one-sided slopes apart by a jump that stays as the step shrinks, where for a
    smooth function their difference halves with the step. Halve the step until both settle (the kink
    is outside), or give up after KINK_HALVINGS. Agreement allows `tolerance` (half what fails a tensor:
    a kink too close to tell apart cannot fail it) and float64 rounding, which grows as the step shrinks.
    """
    def differences(h: float) -> tuple[float, float]:
        original = flat[i].item()
        flat[i] = original + h
        plus = objective().item()
        flat[i] = original - h
        minus = objective().item()
        flat[i] = original
        return (plus - minus) / (2 * h), (plus + minus - 2 * base) / h  # slope; right minus left slope

    h = eps
    slope, jump = differences(h)
    for _ in range(KINK_HALVINGS):
        h /= 2
        new_slope, new_jump = differences(h)
        allowed = tolerance + rounding / h
        if abs(new_slope - slope) <= allowed and abs(new_jump - jump / 2) <= 2 * allowed:
            return new_slope, True
        slope, jump = new_slope, new_jump
    return slope, False


def _status(row: TensorCheck, report: GradcheckReport) -> str:
    if row.rel_error <= report.threshold:
        return "ok"
    if row.module in report.failed_modules:
        return "[bold red]FAIL[/]"
    inner = [m for m in report.failed_modules if _inside(m, row.module)]
    return f"fails through {', '.join(inner)}"


def print_report(report: GradcheckReport) -> None:
    table = Table(title=f"gradient check, module by module (float64, loss {report.loss:.4g}, "
                        f"threshold {report.threshold:.0e})")
    table.add_column("module", no_wrap=True)
    for column in ("compared", "checked", "max |grad|", "max abs error", "kinks", "max rel error", ""):
        table.add_column(column, justify="left" if column in ("compared", "") else "right", no_wrap=True)
    for row in report.rows:
        table.add_row(row.module, row.compared, f"{row.checked}/{row.total}", f"{row.max_grad:.3e}",
                      f"{row.max_abs_error:.2e}", str(row.kinks), f"{row.rel_error:.2e}", _status(row, report))
    console.say(console.render(table))
