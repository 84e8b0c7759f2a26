"""Bad input ends in one clear message naming the problem, a non-zero exit, and no traceback.

The table runs `chainrule-train`'s own entry point (`hydra_app.run(train.main)`, what the console
script calls) in this process, one command line per case; a few cases also run as real subprocesses,
where HYDRA_FULL_ERROR=1 must bring the traceback back.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

from chainrule.cli.train import main
from chainrule.config.entrypoint import run
from tests.support.checkpoints import malicious_checkpoint
from tests.support.processes import run_cli

NO_GPU = not torch.cuda.is_available()
GPUS = torch.cuda.device_count()

# (id, command line, text the one message must contain). {tmp} is the test's temporary directory.
CASES = [
    (
        "unknown-group-option",
        ["model=transformer"],
        "unknown model 'transformer'; choose one of: autoencoder, cnn, gpt",
    ),
    ("unknown-optimizer", ["optim=adamx"], "unknown optim 'adamx'; choose one of: adagrad, adam, adamw"),
    ("unknown-debug-preset", ["debug=turbo"], "unknown debug 'turbo'; choose one of"),
    ("unknown-key", ["trainer.max_epochz=3"], "To append to your config use +trainer.max_epochz=3"),
    (
        "unknown-key-appended",
        ["+trainer.max_epochz=3"],
        "trainer.max_epochz: lightning.pytorch.trainer.Trainer has no argument 'max_epochz'; "
        "did you mean trainer.max_epochs?",
    ),
    (
        "unknown-model-argument",
        ["+model.widht=8"],
        "model.widht: chainrule.models.mlp.MLP has no argument 'widht'",
    ),
    ("wrong-type-batch", ["data.batch_size=abc"], "data.batch_size='abc' is not valid"),
    ("wrong-type-epochs", ["trainer.max_epochs=ten"], "trainer.max_epochs='ten' is not valid"),
    ("wrong-type-seed", ["seed=abc"], "seed='abc' is not valid: use an integer"),
    ("bad-precision", ["trainer.precision=bogus"], "trainer.precision='bogus' is not valid"),
    ("negative-lr", ["optim.lr=-0.01"], "optim.lr=-0.01 is not valid: use a finite number in (0, inf)"),
    ("zero-lr", ["optim=sgd", "optim.lr=0"], "optim.lr=0 is not valid"),
    ("infinite-lr", ["optim.lr=inf"], "optim.lr=inf is not valid"),
    ("bad-betas", ["optim.betas=[1.5,0.9]"], "optim (torch.optim.AdamW): Invalid beta parameter at index 0"),
    ("zero-batch", ["data.batch_size=0"], "data.batch_size=0 is not valid: use an integer in [1, inf)"),
    ("zero-width", ["model.width=0"], "model.width=0 is not valid: use an integer in [1, inf)"),
    ("dropout-above-one", ["model.dropout=1.5"], "model.dropout=1.5 is not valid: use a finite number in [0, 1)"),
    ("label-smoothing-above-one", ["loss.label_smoothing=2"], "loss.label_smoothing=2 is not valid"),
    ("negative-clipping", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is not valid"),
    ("zero-accumulation", ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is not valid"),
    ("regression-loss-on-classes", ["loss=mse"], "loss=mse compares outputs with real-valued targets, but "
                                                  "data=digits has class labels"),
    ("regression-task-on-classes", ["task=regression"], "task=regression measures real values, but data=digits"),
    ("classification-on-values", ["data=diabetes"], "loss=cross_entropy needs class labels, but data=diabetes"),
    ("model-that-does-not-fit", ["model=cnn", "data=tokens"], "data=tokens, model=cnn, task=classification and "
                                                              "loss=cross_entropy do not fit together"),
    ("bad-gradcheck-setting", ["+gradcheck.eps=0"], "gradcheck.eps=0 is not valid"),
    (
        "batch-not-divisible",
        ["data.batch_size=63", "trainer.accelerator=cpu", "trainer.devices=2"],
        "data.batch_size=63 (global) is not divisible by world size 2",
    ),
    ("bad-val-fraction", ["data.val_fraction=1.5"], "data.val_fraction=1.5 is not valid"),
    ("missing-data-dir", ["data=mnist", "paths.data_dir={tmp}/nowhere"], "mnist not found: expected"),
    ("missing-checkpoint", ["ckpt_path={tmp}/missing.ckpt"], "checkpoint not found"),
    (
        "corrupt-checkpoint",
        ["ckpt_path={tmp}/corrupt.ckpt"],
        "the checkpoint is damaged (truncated or corrupt)",
    ),
    (
        "malicious-checkpoint",
        ["ckpt_path={tmp}/evil.ckpt", "trainer.max_epochs=1"],
        "refusing to load checkpoint",
    ),
    ("missing-run-dir", ["resume={tmp}/no-such-run"], "no such run directory"),
    ("not-a-run-dir", ["resume={tmp}"], "is not a chainrule run directory"),
    (
        "devices-beyond-cores",
        ["trainer.accelerator=cpu", f"trainer.devices={(os.cpu_count() or 1) + 1}"],
        f"but this machine has {os.cpu_count()} CPU cores",
    ),
    (
        "gpu-without-gpu" if NO_GPU else "gpus-beyond-count",
        ["trainer.accelerator=gpu"] if NO_GPU else ["trainer.accelerator=gpu", f"trainer.devices={GPUS + 1}"],
        "but this machine has no CUDA GPU" if NO_GPU else f"but this machine has {GPUS} GPU(s)",
    ),
    (
        "fp16-on-cpu",
        ["trainer.accelerator=cpu", "trainer.precision=16-mixed"],
        "trainer.precision=16-mixed needs a CUDA GPU, but the trainer runs on the CPU",
    ),
    (
        "unknown-model-name",
        ["model=torchvision", "model.name=resnet999"],
        "unknown torchvision model 'resnet999'",
    ),
    ("missing-target", ["~model._target_"], "model has no _target_"),
    (
        "unimportable-target",
        ["model._target_=chainrule.models.nope.Net"],
        "model._target_: cannot import 'chainrule.models.nope.Net'",
    ),
    ("bad-nonfinite-policy", ["callbacks.nonfinite.policy=explode"], "unknown non-finite policy"),
    (
        "lightning-misconfiguration",
        ["trainer.gradient_clip_algorithm=sideways"],
        "`gradient_clip_algorithm` sideways is invalid",
    ),
    ("resume-with-multirun", ["-m", "resume={tmp}"], "cannot be combined with --multirun"),
    ("unknown-frozen-module", ["task.freeze=[blockz]"],
     "task.freeze: the model has no module 'blockz'; did you mean"),
    ("zero-lr-multiplier", ["task.lr_multipliers={{blocks: 0}}"],
     "task.lr_multipliers.blocks=0 is not valid"),
    ("fold-without-folds", ["data.fold=1"],
     "k-fold cross-validation needs data.folds and data.fold together"),
    ("one-fold", ["data.folds=1", "data.fold=0"], "data.folds=1 is not valid: use an integer in [2, inf)"),
    ("fold-past-the-last", ["data.folds=5", "data.fold=5"],
     "data.fold=5 is not valid: use an integer in 0..4"),
    ("damaged-init-checkpoint", ["init_from={tmp}/corrupt.ckpt"],
     "init_from={tmp}/corrupt.ckpt: the checkpoint is damaged"),
    ("init-from-and-ckpt-path", ["init_from={tmp}/corrupt.ckpt", "ckpt_path={tmp}/corrupt.ckpt"],
     "starts a new run from weights only"),
]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The files the cases point at: a truncated checkpoint and one with a code-running payload."""
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 not really a zip archive")
    malicious_checkpoint(tmp_path)
    return tmp_path


def run_train(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """What `chainrule-train argv...` exits with and prints."""
    saved = sys.argv[:]
    sys.argv = ["chainrule-train", *argv]
    try:
        run(main, "train", sys.argv[1:])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 20
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_message(
    argv: list[str],
    message: str,
    inputs: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(inputs)
    args = [f"hydra.run.dir={inputs / 'run'}", "logger=none", *(a.format(tmp=inputs) for a in argv)]
    code, text = run_train(args, capsys)
    assert code != 0, text[-2000:]
    message = message.format(tmp=inputs)
    assert message in text, text[-2000:]
    assert "Traceback" not in text
    assert text.count(message) == 1
    assert not (inputs / "payload-ran").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "code"),
    [(["model=transformer"], 2), (["optim.betas=[1.5,0.9]"], 2)],
    ids=["before-hydra", "inside-the-app"],
)
def test_cli_exit_code_and_full_error_switch(tmp_path: Path, argv: list[str], code: int) -> None:
    args = [*argv, f"hydra.run.dir={tmp_path / 'run'}"]
    plain = run_cli("chainrule-train", *args, cwd=tmp_path)
    assert plain.returncode == code
    assert "Traceback" not in plain.stderr and (
        "unknown model" in plain.stderr or "Invalid beta parameter" in plain.stderr
    )
    full = run_cli("chainrule-train", *args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0
    assert "Traceback (most recent call last)" in full.stderr
