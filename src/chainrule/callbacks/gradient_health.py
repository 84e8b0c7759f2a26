"""Gradient health: per-layer gradient and parameter norms, update ratios, dead ReLUs, and one-time alerts
for vanishing and exploding gradients.

Everything is computed on logging steps only (every `every_n_steps` optimizer steps, step 0 included):
other steps cost a modulo check. A logging step costs a few fused `_foreach_norm` kernels, a copy of
the parameters (for update ratios) and a single device-to-host transfer of all values together.

Scalars, each keyed by the path of the module that owns the parameters (the task's `model.` prefix
dropped, e.g. `blocks.0.linear`):

- `grad_norm/<module>`: L2 norm of the module's own parameter gradients, before clipping;
- `grad_norm/global_pre_clip`, `grad_norm/global_post_clip`: L2 norm over all gradients before and after
  Lightning's gradient clipping (`trainer.gradient_clip_val`);
- `param_norm/<module>`: L2 norm of the module's parameters before the update;
- `grad_to_weight/<module>`: grad_norm / param_norm;
- `update_ratio/<module>`: ||update|| / ||parameters||, the actual step the optimizer took;
- `dead_relu/<module>`: fraction of a ReLU module's units that are zero for every sample of the batch;
- `alerts/vanishing`, `alerts/exploding`: 1 at the step a condition is first detected.
"""

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from torch import nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from chainrule.callbacks.to_loggers import log_to_loggers
from chainrule.core.errors import ConfigError
from chainrule.core.log_steps import logging_step
from chainrule.optim.grad_norms import all_reduce_sum, any_sharded, local_part, shares

log = logging.getLogger(__name__)

REMEDIES = {
    "vanishing": (
        "usual remedies: He/Xavier initialization (task.init=kaiming_normal or xavier_normal), residual "
        "connections (model.residual=true), normalization (model.norm=layer or batch), non-saturating "
        "activations (ReLU/GELU instead of sigmoid/tanh)"
    ),
    "exploding": (
        "usual remedies: a lower learning rate (optim.lr), gradient clipping "
        "(trainer.gradient_clip_val=1.0), a learning-rate warm-up (scheduler=warmup_cosine), normalization "
        "(model.norm=layer or batch)"
    ),
}
RELUS = (nn.ReLU, nn.ReLU6)
MAX_NAMED = 6  # layers named in one alert; the rest are counted


class GradientHealth(L.Callback):
    """Logs gradient statistics to every configured logger and warns once per unhealthy condition.

    every_n_steps: compute and log on optimizer steps 0, n, 2n, ...
    update_ratio: also log update-to-weight ratios (keeps one copy of the parameters for the run).
    dead_relu: also log dead-ReLU fractions (forward hooks on nn.ReLU modules during logging steps only).
    vanishing_ratio: *vanishing* when the geometric mean of the first third of the layers' gradient norms
        is below vanishing_ratio x that of the last third (layers in registration order, input first) ...
    vanishing_floor: ... or when any layer's gradient norm is below this absolute floor.
    exploding_norm: *exploding* when the global gradient norm (before clipping) exceeds this, is not
        finite, ...
    exploding_growth: ... or grew by more than this factor since the previous logging step.

    Under DDP the gradients are those of rank 0 after the all-reduce (identical on all ranks), so only
    rank 0 computes anything. Under FSDP and tensor parallelism (sharded parameters and gradients) every
    rank adds its shards and one all-reduce per measurement gives the norms of the whole tensors
    (chainrule.optim.grad_norms); rank 0 logs them.
    Alerts go to the console (Python logging), to every logger as `alerts/<condition>`,
    and, when a W&B run is online, to W&B as an alert.
    """

    def __init__(
        self,
        every_n_steps: int,
        update_ratio: bool,
        dead_relu: bool,
        vanishing_ratio: float,
        vanishing_floor: float,
        exploding_norm: float,
        exploding_growth: float,
    ):
        super().__init__()
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.gradient_health.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.update_ratio = update_ratio
        self.dead_relu = dead_relu
        self.vanishing_ratio = vanishing_ratio
        self.vanishing_floor = vanishing_floor
        self.exploding_norm = exploding_norm
        self.exploding_growth = exploding_growth

        self.alerted: set[str] = set()
        self._names: list[str] = []  # modules owning parameters, in registration order
        self._params: list[nn.Parameter] = []
        self._owner: torch.Tensor | None = None  # module index of each parameter
        self._owner_on_device: torch.Tensor | None = None
        self._first: torch.Tensor | None = None  # 1 for a parameter's first module, 0 where it is tied
        self._shares: torch.Tensor | None = None  # sharded: each parameter's weight in the world-wide sum
        self._sharded = False
        self._single_device = True
        self._relus: list[tuple[str, nn.Module]] = []
        self._relu_handles: list[RemovableHandle] = []
        self._dead: dict[str, list[torch.Tensor]] = {}
        self._pending: dict[str, Any] | None = None  # pre-step values of the current logging step
        self._before: list[torch.Tensor] | None = None  # parameters before the update of a logging step
        self._previous_global: float | None = None

    # --- layout -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names, self._params, owner = [], [], []
        for name, module in pl_module.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                owner += [len(self._names)] * len(own)
                self._names.append(_display_name(name))
                self._params += own
        self._owner = torch.tensor(owner, dtype=torch.long)
        self._relus = [(_display_name(name), module) for name, module in pl_module.named_modules()
                       if isinstance(module, RELUS)]
        self._sharded = any_sharded(self._params)
        if self._params:
            device = local_part(self._params[0]).device
            self._owner_on_device = self._owner.to(device)
            self._single_device = len({local_part(p).device for p in self._params}) == 1
            # A tied parameter (GPT's embedding and output head) counts in each module's norm, once globally.
            seen: set[int] = set()
            self._first = torch.tensor([not (id(p) in seen or seen.add(id(p))) for p in self._params],
                                       dtype=torch.float32, device=device)
            self._shares = torch.tensor(shares(self._params), device=device) if self._sharded else None

    def _is_logging_step(self, trainer: L.Trainer) -> bool:
        """Whether this rank measures at this step: rank 0, and under sharding every rank (collectives)."""
        return ((trainer.is_global_zero or self._sharded) and trainer.global_step % self.every_n_steps == 0
                and bool(self._params))

    # --- dead ReLUs: forward hooks only while a logging step runs ----------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if (self.dead_relu and not self._relu_handles and trainer.is_global_zero
                and self._is_logging_step(trainer)):
            self._relu_handles = [module.register_forward_hook(self._dead_hook(name))
                                  for name, module in self._relus]

    def _dead_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not module.training:
                return
            # A unit is a channel for images (N, C, H, W) and the last dimension otherwise; it is dead
            # when it outputs zero for every sample (and position).
            channel = 1 if output.ndim == 4 else output.ndim - 1
            others = tuple(d for d in range(output.ndim) if d != channel)
            alive = output.detach().gt(0).any(dim=others) if others else output.detach().gt(0)
            self._dead.setdefault(name, []).append(1.0 - alive.float().mean())

        return hook

    def _remove_relu_hooks(self) -> None:
        for handle in self._relu_handles:
            handle.remove()
        self._relu_handles = []

    # --- gradients before clipping, parameters before the update -----------------------------------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Optimizer) -> None:
        # Lightning calls this hook after backward and the AMP unscale, and clips right after it returns.
        if not self._is_logging_step(trainer):
            return
        with torch.no_grad():
            grad_sq, has_grad = self._module_sq_norms([p.grad for p in self._params])
            params = [local_part(p.detach()) for p in self._params]
            param_sq, _ = self._module_sq_norms(params)
            if self.update_ratio:
                # One buffer for the whole run: fresh copies every logging step would cost page faults
                # on a CPU, and on a GPU the caching allocator would keep the memory reserved anyway.
                if self._before is None:
                    self._before = [torch.empty_like(p) for p in params]
                torch._foreach_copy_(self._before, params)
            self._pending = {"grad_sq": grad_sq, "has_grad": has_grad, "param_sq": param_sq}

    def _module_sq_norms(self, tensors: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, list[bool]]:
        """Per-module sums of squared L2 norms, with the global sum (tied parameters once) appended (one
        fused kernel per device and dtype), and which modules had any tensor at all (parameters unused in
        this step have no gradient). `tensors` go with `self._params`, one each (a gradient, a parameter,
        an update: sharded alike); under sharding, the sums of all ranks' shards (one all-reduce)."""
        assert self._owner is not None and self._first is not None
        present = [i for i, t in enumerate(tensors) if t is not None and not t.is_sparse]
        device = self._first.device
        sums = torch.zeros(len(self._names) + 1, device=device, dtype=torch.float32)
        if len(present) == len(tensors):  # the usual case: no index juggling
            chosen, owner, has = list(tensors), self._owner_on_device, [True] * len(self._names)
            first, weights = self._first, self._shares
        else:
            chosen, owner = [tensors[i] for i in present], self._owner[present]
            has = [False] * len(self._names)
            for module in owner.tolist():
                has[module] = True
            owner, index = owner.to(device), torch.tensor(present, device=device)
            first = self._first[index]
            weights = None if self._shares is None else self._shares[index]
        if chosen:
            norms = torch._foreach_norm([local_part(t) for t in chosen])
            if not self._single_device:
                norms = [n.to(device) for n in norms]
            squares = torch.stack(norms).float().square()  # stack promotes mixed dtypes
            if weights is not None:
                squares = squares * weights
            sums[:-1].index_add_(0, owner, squares)
            sums[-1] = (squares * first).sum()
        if self._sharded:
            all_reduce_sum(sums)
        return sums, has

    # --- after the update: post-clip gradients (not yet zeroed), updates, logging, alerts -----------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._pending is None:
            return  # not a logging step, or the step was accumulated without an optimizer step yet
        pending, self._pending = self._pending, None
        with torch.no_grad():
            post_sq, _ = self._module_sq_norms([p.grad for p in self._params])
            m = len(self._names)
            values = [pending["grad_sq"][:m].sqrt(), pending["grad_sq"][m:].sqrt(), post_sq[m:].sqrt(),
                      pending["param_sq"][:m].sqrt()]
            if self.update_ratio:
                # now minus the update
                torch._foreach_sub_(self._before, [local_part(p.detach()) for p in self._params])
                update_sq, _ = self._module_sq_norms(self._before)
                values.append(update_sq[:m].sqrt())
            dead_names = sorted(self._dead)
            if dead_names:
                fractions = [torch.stack(self._dead[name]).mean() for name in dead_names]
                values.append(torch.stack(fractions).to(values[0]))
            # The one device-to-host transfer of the logging step.
            flat = torch.cat([v.to(values[0].device) for v in values]).tolist()
        self._dead = {}
        self._remove_relu_hooks()
        if not trainer.is_global_zero:  # a rank that only took part in the sums
            return

        grad = flat[:m]
        global_pre, global_post = flat[m], flat[m + 1]
        param = flat[m + 2:2 * m + 2]
        rest = flat[2 * m + 2:]
        metrics = {"grad_norm/global_pre_clip": global_pre, "grad_norm/global_post_clip": global_post}
        for i, name in enumerate(self._names):
            metrics[f"param_norm/{name}"] = param[i]
            if pending["has_grad"][i]:
                metrics[f"grad_norm/{name}"] = grad[i]
                metrics[f"grad_to_weight/{name}"] = _ratio(grad[i], param[i])
        if self.update_ratio:
            update, rest = rest[:m], rest[m:]
            for i, name in enumerate(self._names):
                metrics[f"update_ratio/{name}"] = _ratio(update[i], param[i])
        for name, fraction in zip(dead_names, rest):
            metrics[f"dead_relu/{name}"] = fraction

        step = logging_step(trainer)
        layer_norms = [(name, grad[i]) for i, name in enumerate(self._names) if pending["has_grad"][i]]
        for condition, message in self._check(layer_norms, global_pre, step):
            metrics[f"alerts/{condition}"] = 1.0
            self._alert(trainer.loggers, condition, message)
        log_to_loggers(trainer, metrics)

    # --- alerts -------------------------------------------------------------------------------------
    def _check(self, layer_norms: list[tuple[str, float]], global_norm: float,
               step: int) -> list[tuple[str, str]]:
        """Conditions first seen at this step, each with its console message."""
        found = []
        if "vanishing" not in self.alerted and (reason := self._vanishing(layer_norms)):
            found.append(("vanishing",
                          f"vanishing gradients at step {step}: {reason}; {REMEDIES['vanishing']}"))
        if "exploding" not in self.alerted and (reason := self._exploding(layer_norms, global_norm)):
            found.append(("exploding",
                          f"exploding gradients at step {step}: {reason}; {REMEDIES['exploding']}"))
        if math.isfinite(global_norm):
            self._previous_global = global_norm
        self.alerted.update(condition for condition, _ in found)
        return found

    def _vanishing(self, layer_norms: list[tuple[str, float]]) -> str | None:
        if not all(math.isfinite(g) for _, g in layer_norms):
            return None  # overflowing gradients are the exploding condition's to report
        below_floor = [(n, g) for n, g in layer_norms if g < self.vanishing_floor]
        if below_floor:
            return f"gradient norm below {self.vanishing_floor:.0e} in {_name_layers(below_floor)}"
        if len(layer_norms) < 2:
            return None
        third = math.ceil(len(layer_norms) / 3)
        early, late = _geometric_mean(layer_norms[:third]), _geometric_mean(layer_norms[-third:])
        if early < self.vanishing_ratio * late:
            limit = self.vanishing_ratio * late
            small = [(n, g) for n, g in layer_norms if g < limit]
            return (f"the first layers' gradient norms are {late / max(early, 1e-300):.1e}x smaller than the "
                    f"last layers' ({_name_layers(small)} below {limit:.1e})")
        return None

    def _exploding(self, layer_norms: list[tuple[str, float]], global_norm: float) -> str | None:
        largest = sorted(layer_norms, key=lambda item: -item[1] if math.isfinite(item[1]) else -math.inf)
        if not math.isfinite(global_norm):
            bad = [(n, g) for n, g in layer_norms if not math.isfinite(g)]
            return f"the global gradient norm is {global_norm} (non-finite in {_name_layers(bad)})"
        if global_norm > self.exploding_norm:
            return (f"global gradient norm {global_norm:.2e} exceeds {self.exploding_norm:.0e}; largest in "
                    f"{_name_layers(largest[:3])}")
        previous = self._previous_global
        if previous and global_norm > self.exploding_growth * previous:
            return (f"global gradient norm grew {global_norm / previous:.0f}x since the last check "
                    f"({previous:.2e} -> {global_norm:.2e}); largest in {_name_layers(largest[:3])}")
        return None

    def _alert(self, loggers: Sequence[Logger], condition: str, message: str) -> None:
        log.warning(message)
        for logger in loggers:
            if isinstance(logger, WandbLogger) and not logger.experiment.offline:
                logger.experiment.alert(title=f"{condition} gradients", text=message, level="WARN")

    # --- cleanup ------------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._remove_relu_hooks()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_relu_hooks()
        self._pending, self._dead, self._before = None, {}, None

    def state_dict(self) -> dict[str, Any]:
        # A resumed run keeps quiet about conditions it already reported.
        return {"alerted": sorted(self.alerted), "previous_global": self._previous_global}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.alerted = set(state_dict.get("alerted", []))
        self._previous_global = state_dict.get("previous_global")


def _display_name(name: str) -> str:
    # The task holds the network as `model`; users know its layers by their paths inside the network.
    return name.removeprefix("model.") if name else "task"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf if numerator > 0 else 0.0


def _geometric_mean(items: list[tuple[str, float]]) -> float:
    return math.exp(sum(math.log(max(g, 1e-300)) for _, g in items) / len(items))


def _name_layers(items: list[tuple[str, float]]) -> str:
    named = ", ".join(f"{name} ({norm:.1e})" for name, norm in items[:MAX_NAMED])
    return named + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")
