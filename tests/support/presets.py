"""Named runs: chainrule-train overrides that tests in several folders share, each named for what it is.
A folder's own presets (a sweep trial, a quick W&B run, ...) stay in that folder."""

# No progress bar redrawn over the console output that a test reads.
NO_PROGRESS_BARS = ["callbacks.progress=null", "trainer.enable_progress_bar=false"]
# ... and no model summary table either.
QUIET_CONSOLE = [*NO_PROGRESS_BARS, "trainer.enable_model_summary=false"]

# The run that a DDP run must reproduce exactly as one process: 223 samples -> 133 train (4 global
# batches of 32 per epoch), 45 validation and 45 test samples (odd: split over 2 ranks, padding would
# duplicate a sample). 8 optimizer steps = 2 epochs, so the per-epoch reshuffle is covered. Plain SGD
# (momentum) and no dropout: dropout masks depend on each process's random stream, so a run with dropout
# cannot equal a single process exactly.
DDP_RUN_STEPS = 8
DDP_RUN = (
    "data=synthetic", "data.num_samples=223", "data.batch_size=32", "model.dropout=0", "optim=sgd",
    f"trainer.max_steps={DDP_RUN_STEPS}", "trainer.log_every_n_steps=1", *NO_PROGRESS_BARS, "logger=csv",
)

# The run that an interrupted and resumed run must reproduce bit for bit: 4 epochs x 10 batches of a
# dropout MLP with AdamW and a warm-up/cosine schedule, on the CPU with deterministic algorithms: RNG
# streams, optimizer moments, the LR schedule and the data order all matter, so any slip in resuming
# changes bits of the result. A checkpoint every 4 steps.
DETERMINISTIC_RUN_STEPS_PER_EPOCH = 10
DETERMINISTIC_RUN_STEPS = 40
DETERMINISTIC_RUN = [
    "data=synthetic",
    "data.num_samples=534",  # 320 training samples: 10 full global batches of 32 per epoch
    "model.width=32",
    "trainer=cpu",
    "trainer.deterministic=true",
    "trainer.max_epochs=4",
    "callbacks.checkpoints.every_n_train_steps=4",
    *QUIET_CONSOLE,
    "test=false",
    "logger=csv",
]

# DETERMINISTIC_RUN as a user runs it: default loggers (W&B offline and CSV), default callbacks, a test
# phase; metrics every 2 steps, a step checkpoint every 4.
DEFAULTS_RUN_STEPS_PER_EPOCH = 10
DEFAULTS_RUN_EPOCHS = 4
DEFAULTS_RUN = [
    "data=synthetic",
    "data.num_samples=534",
    "model.width=32",
    "trainer=cpu",
    "trainer.deterministic=true",
    f"trainer.max_epochs={DEFAULTS_RUN_EPOCHS}",
    "trainer.log_every_n_steps=2",
    "callbacks.checkpoints.every_n_train_steps=4",
]

# The run that a sharded run (trainer=fsdp_cpu) must reproduce as one process: a GPT of 2 blocks (attention
# and MLP for tensor parallelism to split) on token sequences; 160 sequences -> 128 training ones, 4
# global batches of 32 per epoch, 8 steps = 2 epochs. SGD with momentum, as for DDP_RUN (Adam's
# normalisation magnifies rounding where a gradient is near zero, and tensor-parallel ranks sum partial
# products in another order), and clipping that acts at every step. Gradient norms logged at every step.
SHARDED_RUN_STEPS = 8
SHARDED_RUN = (
    "experiment=tokens_gpt", "data.num_sequences=160", "data.seq_len=16", "data.vocab_size=32",
    "data.batch_size=32", "model.n_layer=2", "model.n_head=4", "model.n_embd=32", "optim=sgd",
    "trainer.gradient_clip_val=0.05", f"trainer.max_steps={SHARDED_RUN_STEPS}", "trainer.log_every_n_steps=1",
    "callbacks.gradient_health.every_n_steps=1", *NO_PROGRESS_BARS, "logger=csv",
)
# The sharded run that an interrupted and resumed one must reproduce bit for bit: 2 ranks, fused AdamW with
# clipping, deterministic algorithms, a step checkpoint every 3 steps (mid-epoch: 4 steps per epoch).
SHARDED_RESUME_RUN = (
    *[o for o in SHARDED_RUN if not o.startswith(("optim=", "callbacks.gradient_health"))], "optim=adamw",
    "optim.fused=true", "trainer=fsdp_cpu", "trainer.deterministic=true",
    "callbacks.checkpoints.every_n_train_steps=3", "test=false",
)
