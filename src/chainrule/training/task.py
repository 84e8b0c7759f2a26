"""The LightningModule: one model, one loss, metrics per split, and the optimizer/schedule wiring."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, Metric, MetricCollection

from chainrule.core.errors import unknown_choice
from chainrule.core.log_steps import writes_step_logs
from chainrule.models.init import initialize
from chainrule.optim.grad_norms import clip_grad_norm_
from chainrule.optim.param_groups import build_optimizer, check_multipliers, submodule
from chainrule.optim.schedules import SchedulerConfig
from chainrule.training.parallelize import is_parallelized
from chainrule.training.sharded_strategy import ShardedStrategy

TARGETS = ("label", "input")


class Task(L.LightningModule):
    """Trains `model` to minimize `loss(model(x), target)` by backpropagation.

    target: `label` trains on the data's targets; `input` reconstructs the input (labels unused).
    optimizer: called with parameter groups (see chainrule.optim.param_groups); scheduler: called with the optimizer
    and the total number of optimizer steps. l1_weight adds l1_weight x sum|w| over decayed weights.
    compile: a torch.compile mode (`default`, `reduce-overhead`, `max-autotune`) or None.
    channels_last: store conv weights and 4-D inputs in NHWC, which tensor cores prefer.
    freeze: names of the model's modules (`blocks.0`, `layer1`) that do not train: their parameters get no
    gradient and no optimizer state, and they stay in eval mode (dropout off, batch-norm statistics fixed).
    lr_multipliers: {module name: factor} on the optimizer's learning rate (chainrule.optim.param_groups).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., SchedulerConfig],
        metrics: Mapping[str, Metric],
        target: str,
        init: str,
        l1_weight: float,
        compile: str | None,
        channels_last: bool,
        freeze: Sequence[str],
        lr_multipliers: Mapping[str, float],
    ):
        super().__init__()
        if target not in TARGETS:
            raise unknown_choice("task.target", target, list(TARGETS))
        initialize(model, init)
        self.frozen = [str(name) for name in freeze or []]
        for name in self.frozen:
            submodule(model, name, "task.freeze").requires_grad_(False)
        self.lr_multipliers = {str(name): factor for name, factor in (lr_multipliers or {}).items()}
        check_multipliers(model, self.lr_multipliers)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            # Module.compile() compiles forward in place, so state_dict keys (and checkpoints) stay the
            # same with and without compilation.
            model.compile(mode=compile)
        self.model = model
        self.channels_last = channels_last
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.target = target
        self.l1_weight = l1_weight
        collection = MetricCollection(dict(metrics or {}))
        self.train_metrics = collection.clone(prefix="train/")
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        # Evaluation losses as metrics: torchmetrics sums losses and sample counts over all processes,
        # where Lightning's sync_dist would average the counts in integers (wrong for uneven shards).
        self.eval_losses = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        # The training epoch's running loss and metrics travel in every checkpoint (persistent states),
        # so that a run resumed mid-epoch reports the epoch averages an uninterrupted run reports.
        self.train_loss = MeanMetric()
        self._trained_parameters: list[nn.Parameter] = []  # set when training starts (on_train_start)
        self.train_loss.persistent(True)
        self.train_metrics.persistent(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train(self, mode: bool = True) -> "Task":
        """Lightning switches the whole module to train mode each epoch; frozen modules stay in eval mode."""
        super().train(mode)
        for name in self.frozen:
            self.model.get_submodule(name).eval()
        return self

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        x = self._input(x)
        target = x if self.target == "input" else y
        output = self.model(x)
        loss = self.loss(output, target)
        # Accumulated on the device; synced and logged once per epoch (on_*_epoch_end below). Lightning's
        # `log` costs about a millisecond a call, which per step was most of the stack's overhead.
        getattr(self, f"{split}_metrics").update(output.detach(), target)
        losses = self.train_loss if split == "train" else self.eval_losses[split]
        losses.update(loss.detach(), weight=len(x))
        if split == "train" and writes_step_logs(self.trainer):
            # Synced: under DDP the logged loss is the global batch's, as one process would log it.
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True,
                     batch_size=len(x))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        if self.l1_weight:
            penalty = sum(p.abs().sum() for p in self.model.parameters() if p.ndim >= 2)
            if writes_step_logs(self.trainer):
                self.log("train/l1_penalty", penalty, on_step=True, on_epoch=False)
            loss = loss + self.l1_weight * penalty
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_train_start(self) -> None:
        # Walking the module tree (metric collections included) each step cost more than clipping itself;
        # the parameters are fixed once the strategy has set the model up (FSDP replaces them before).
        self._trained_parameters = list(self.parameters())

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train/loss_epoch", self.train_loss, self.train_metrics, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val/loss", self.eval_losses["val"], self.val_metrics, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test/loss", self.eval_losses["test"], self.test_metrics, prog_bar=True)

    def _log_epoch(self, loss_name: str, loss: MeanMetric, metrics: MetricCollection, prog_bar: bool) -> None:
        """The epoch's loss and metrics, as metric objects: Lightning computes them (summed over all
        processes by torchmetrics) and resets them at the epoch's end."""
        if not loss.update_called:  # an epoch without batches (e.g. trainer.limit_val_batches=0)
            return
        self.log(loss_name, loss, on_step=False, on_epoch=True, prog_bar=prog_bar)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=prog_bar)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """The model's output for the inputs `batch[0]` (the rest, labels or positions, unused)."""
        return self.model(self._input(batch[0]))

    def configure_gradient_clipping(
        self, optimizer: Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip as `trainer.gradient_clip_val/algorithm` say, also for fused optimizers when no loss scaler
        is in use: Lightning refuses clipping with a fused optimizer under any AMP precision because fp16's
        scaler unscales inside the fused step, but bf16 and fp32 gradients are never scaled."""
        if not gradient_clip_val:
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val, foreach=True)
        else:  # the norm over all ranks' shards under trainer=fsdp (chainrule.optim.grad_norms)
            # The norm of this step's gradients, if the non-finite guard computed it already
            clip_grad_norm_(self._trained_parameters or self.parameters(), gradient_clip_val, foreach=True, step=self.trainer.global_step)

    def configure_model(self) -> None:
        """Under trainer=fsdp, shard the model as it declares (chainrule.training.parallelize) before the
        optimizer is built; Lightning calls this for every stage, so it acts once. No-op otherwise."""
        strategy = self.trainer.strategy
        if isinstance(strategy, ShardedStrategy) and not is_parallelized(self.model):
            strategy.parallelize(self.model)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.optimizer_factory, self.model, self.lr_multipliers)
        schedule = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": schedule} if schedule else {"optimizer": optimizer}
