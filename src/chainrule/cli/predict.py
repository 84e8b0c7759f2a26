"""`chainrule-predict ckpt_path=...`: a checkpoint's predictions for a data split or a folder of inputs,
written as a table (one row per input, in input order) into this command's run directory."""

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from chainrule.config.entrypoint import execute, run
from chainrule.config.groups import config_dir

if TYPE_CHECKING:  # imported where used: `--help` and command-line errors answer without loading torch
    import torch

    from chainrule.data.prediction import PredictionInputs
    from chainrule.training.task import Task

SPLITS = ("train", "val", "test")
OUTPUT = "predictions"  # <run dir>/predictions.csv or .parquet


def predict(cfg: DictConfig) -> Path | None:
    """Rebuild the model from the config stored in the checkpoint `cfg.ckpt_path` names (a file, a run
    directory, or `latest`: chainrule.checkpointing.discovery.checkpoint_to_use), load its weights, and
    predict `cfg.split` of the checkpoint's data (or of `cfg.data`), or the files in `cfg.inputs`.

    Every rank predicts its share; rank 0 writes the table and returns its path (other ranks: None).
    """
    from chainrule.checkpointing.discovery import checkpoint_to_use
    from chainrule.checkpointing.io import load_checkpoint, load_run_config
    from chainrule.config import builders
    from chainrule.core import console
    from chainrule.training.prediction import GatherPredictions, check_format, prediction_columns, write_table

    check_format(cfg.format)
    checkpoint = checkpoint_to_use(cfg.ckpt_path, cfg.paths.log_dir)
    run_cfg = OmegaConf.create(load_run_config(checkpoint))
    refuse_unsupported(run_cfg)
    inputs = prediction_inputs(cfg, run_cfg)
    task = builders.build_task(run_cfg, inputs)
    task.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    refuse_per_position_outputs(task, inputs.x[:1])

    gathered = GatherPredictions()
    trainer = builders.build_trainer(cfg, callbacks=[gathered], loggers=[])
    with warnings.catch_warnings():
        # Lightning cannot see that the batch sampler returns every sample (chainrule.data.sampling).
        warnings.filterwarnings("ignore", message="You are using a custom batch sampler")
        trainer.predict(task, datamodule=inputs, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    targets = None if inputs.targets is None else inputs.targets[gathered.positions]
    binary = str(run_cfg.loss.get("_target_", "")).endswith("BCEWithLogitsLoss")  # per-class sigmoids
    ids = [inputs.ids[i] for i in gathered.positions.tolist()]
    columns = prediction_columns(ids, gathered.outputs, targets, inputs.num_classes, sigmoid=binary)
    path = write_table(columns, Path(cfg.paths.output_dir) / OUTPUT, cfg.format)
    console.say(f"predictions of {checkpoint}: {path} ({len(gathered.positions)} rows)")
    return path


def prediction_inputs(cfg: DictConfig, run_cfg: DictConfig) -> "PredictionInputs":
    """The inputs to predict: `cfg.inputs` (a folder), else `cfg.split` of `cfg.data` or of the checkpoint's
    own data. The model's input shape and outputs always come from the checkpoint's data."""
    from chainrule.config import builders
    from chainrule.core import console
    from chainrule.core.errors import ConfigError, unknown_choice
    from chainrule.data.prediction import PredictionInputs, read_inputs

    trained_on = builders.build_datamodule(run_cfg)
    shapes = {"num_classes": trained_on.num_classes, "num_outputs": trained_on.num_outputs}
    if cfg.get("inputs"):
        ids, x = read_inputs(cfg.inputs, trained_on.input_shape)
        return PredictionInputs(x, ids, None, batch_size=trained_on.batch_size, **shapes)
    if cfg.split not in SPLITS:
        raise unknown_choice("split", cfg.split, list(SPLITS))
    data = trained_on
    if cfg.get("data") is not None:
        data = builders.build_datamodule(cfg)
        if data.input_shape != trained_on.input_shape:
            raise ConfigError(f"data={data.__class__.__name__} has inputs of shape {data.input_shape}, the "
                              f"checkpoint's model takes {trained_on.input_shape}; pick data of its kind")
        if cfg.seed != run_cfg.get("seed"):
            trained_seed = run_cfg.get("seed")
            console.warn(f"data= is split with seed={cfg.seed}, the checkpoint's run used "
                         f"seed={trained_seed}: its test split is this data's only with seed={trained_seed}")
    arrays = getattr(data.splits, cfg.split)
    return PredictionInputs(arrays.x, range(len(arrays)), arrays.y, batch_size=data.batch_size, **shapes)


def refuse_unsupported(run_cfg: DictConfig) -> None:
    """Predictions are classes or values; a model that reconstructs its input has neither."""
    from chainrule.core.errors import ConfigError

    if run_cfg.task.get("target") == "input":
        raise ConfigError("chainrule-predict writes class probabilities or regression values, but this "
                          "checkpoint reconstructs its input (task.target=input); use chainrule-eval for its "
                          "loss")


def refuse_per_position_outputs(task: "Task", sample: "torch.Tensor") -> None:
    """One row per input needs one output vector per input; a language model has one per position."""
    import torch

    from chainrule.core.errors import ConfigError

    task.eval()
    with torch.no_grad():
        shape = tuple(task(sample).shape)
    if len(shape) != 2:
        raise ConfigError(f"chainrule-predict writes one row per input, but this model outputs {shape} per "
                          f"batch of one (per position, as a language model); use chainrule-eval for its "
                          f"loss")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    execute(predict, cfg, required=["trainer"])


def cli() -> None:
    run(main, "predict", required=("ckpt_path",))


if __name__ == "__main__":
    cli()
