"""Stopping (or skipping) an optimizer step whose loss or gradients are NaN or infinite.

One NaN update poisons every parameter it touches, and every checkpoint written after it. The guard
looks at the loss of each backward pass and at the gradients just before the optimizer step: together
one device-to-host transfer per step.
"""

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.optim import Optimizer

from chainrule.callbacks.to_loggers import log_to_loggers
from chainrule.core import console
from chainrule.core.errors import ChainruleError, unknown_choice
from chainrule.optim.grad_norms import all_reduce_sum, any_sharded, local_part, step_total_norm

POLICIES = ("raise", "skip")


class NonFiniteError(ChainruleError):
    """Training produced a NaN or infinite loss or gradient."""


class NonFiniteGuard(L.Callback):
    """Checks the loss and the gradients before every optimizer step.

    policy: `raise` stops before the update with an error naming the step and the first layer whose
        output is non-finite; parameters, optimizer state and checkpoints stay as they were.
        `skip` drops the update (the gradients are cleared, so the optimizer changes nothing; the LR
        schedule still advances), counts it in `train/skipped_steps`, and stops once
        `max_consecutive_skips` steps in a row were skipped.
    With fp16 mixed precision the gradient scaler already skips steps with infinite gradients (that is
    how it finds its scale), so only the loss is checked then. Under FSDP and tensor parallelism the check
    spans all ranks (the global gradient norm, every rank's loss), so that all ranks skip or stop together.
    """

    def __init__(self, policy: str, max_consecutive_skips: int):
        if policy not in POLICIES:
            raise unknown_choice("non-finite policy (callbacks.nonfinite.policy)", policy, list(POLICIES))
        if max_consecutive_skips < 1:
            raise ChainruleError(
                f"callbacks.nonfinite.max_consecutive_skips must be >= 1, got {max_consecutive_skips}"
            )
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0
        self.consecutive = 0
        self._loss_finite: torch.Tensor | None = None
        self._batch: object = None
        self._batch_idx = 0
        self._sharded = False  # gradients are DTensors: decisions must be the same on every rank
        self._device = torch.device("cpu")
        self._parameters: list[nn.Parameter] = []  # the module's, in its order, from the start of training

    def _anywhere(self, flag: bool) -> bool:
        """`flag` on any rank, under sharding (a collective: every rank asks); this rank's flag otherwise."""
        if not self._sharded:
            return flag
        # On the gradients' device: NCCL reduces GPU tensors only.
        return bool(all_reduce_sum(torch.tensor([float(flag)], device=self._device)).item() > 0)

    def _everywhere(self, flag: bool) -> bool:
        return not self._anywhere(not flag)

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = state_dict.get("skipped", 0)
        self.consecutive = state_dict.get("consecutive", 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Walking the module tree each step cost more than the check itself; the parameters are fixed once
        # the strategy has set the model up (FSDP replaces them before).
        self._parameters = list(pl_module.parameters())

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach()).all()  # stays on the device: no sync here
        # With gradient accumulation, one bad micro-batch spoils the step.
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        checks = [] if loss_finite is None else [loss_finite]
        if params and not _scaler_handles_infs(trainer):
            # Sharded gradients: over all ranks' shards. Taken in the module's order, as norm clipping
            # takes it right after: clipping reuses it.
            grads = [p.grad for p in self._parameters or pl_module.parameters() if p.grad is not None]
            total = step_total_norm(grads, trainer.global_step)
            checks.append(torch.isfinite(total).to(device=checks[0].device if checks else total.device))
        self._sharded = any_sharded(p.grad for p in params)
        self._device = local_part(params[0].grad).device if params else self._device
        if not checks or self._everywhere(bool(torch.stack(checks).all())):
            self.consecutive = 0
            if self.policy == "skip":
                log_to_loggers(trainer, {"train/skipped_steps": float(self.skipped)})
            return

        what = "loss" if loss_finite is not None and not bool(loss_finite) else "gradients"
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        if self.policy == "raise":
            raise NonFiniteError(
                f"non-finite {what} at {where}; {self._culprit(pl_module, optimizer)}. The update of this "
                f"step was not applied and no checkpoint was written after it. Usual fixes: a lower learning "
                f"rate (optim.lr), gradient clipping (trainer.gradient_clip_val=1.0), checking the data for "
                f"NaN/inf, `debug=anomaly` to find the operation; or callbacks.nonfinite.policy=skip"
            )
        for p in params:
            p.grad = None  # optimizers leave parameters without a gradient untouched
        self.skipped += 1
        self.consecutive += 1
        log_to_loggers(trainer, {"train/skipped_steps": float(self.skipped)})
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteError(
                f"non-finite {what} in {self.consecutive} consecutive steps, the last at {where} "
                f"({self.skipped} steps skipped in all); stopping. {self._culprit(pl_module, optimizer)}"
            )
        console.warn(
            f"non-finite {what} at {where}: update skipped ({self.consecutive} in a row, "
            f"{self.skipped} in all)"
        )

    def _culprit(self, pl_module: L.LightningModule, optimizer: Optimizer) -> str:
        """Names the layer to look at: one whose weights are already non-finite, else the first module
        whose output is non-finite when the batch is run forward again, else the first parameter with a
        non-finite gradient."""
        # Under sharding every answer below is all ranks' (each looks at its shards), so that all ranks run
        # the forward pass of first_nonfinite_module together.
        for name, p in pl_module.named_parameters():
            if self._anywhere(not bool(torch.isfinite(local_part(p)).all())):
                return f"first non-finite layer: {name} (its values are non-finite)"
        inputs = self._batch[0] if isinstance(self._batch, (list, tuple)) else self._batch
        if self._anywhere(
            isinstance(inputs, torch.Tensor)
            and inputs.is_floating_point()
            and not bool(torch.isfinite(inputs).all())
        ):
            return "the batch's inputs hold NaN/inf: check the data"
        layer = first_nonfinite_module(pl_module, self._batch)
        if layer is not None:
            return f"first non-finite layer: {layer} (its output is non-finite)"
        for name, p in pl_module.named_parameters():
            if self._anywhere(p.grad is not None and not bool(torch.isfinite(local_part(p.grad)).all())):
                return (
                    f"first non-finite layer: {name} (its gradient is non-finite; the forward pass is finite)"
                )
        return "the model's outputs and gradients are finite: look at the loss and the targets"


def _scaler_handles_infs(trainer: L.Trainer) -> bool:
    precision = trainer.precision_plugin
    return isinstance(precision, MixedPrecision) and precision.scaler is not None


def first_nonfinite_module(pl_module: nn.Module, batch: object) -> str | None:
    """The first module (in execution order, innermost first) whose output holds a NaN or inf when the
    batch's inputs are run forward again, without gradients and without disturbing the RNG streams."""
    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(inputs, torch.Tensor):
        return None
    found: list[str] = []

    def hook(name: str):
        def check(module: nn.Module, args: object, output: object) -> None:
            if (
                not found
                and isinstance(output, torch.Tensor)
                and output.is_floating_point()
                and not torch.isfinite(output).all()
            ):
                found.append(name)

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in pl_module.named_modules() if n]
    devices = [inputs.device.index or 0] if inputs.is_cuda else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            pl_module(inputs)
    except Exception:  # a diagnosis must not hide the original problem
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None
