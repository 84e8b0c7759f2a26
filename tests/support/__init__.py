"""What tests in more than one folder share, each piece defined once: where things are (paths.py), the
config tree (configs.py), starting processes with one environment (processes.py), named run presets
(presets.py), reading a run's metrics.csv (metrics.py), its checkpoints (checkpoints.py) and its offline
W&B runs (wandb_runs.py), interrupting a run at an exact point (interruptions.py, pause_point.py), which
samples a run trained on (seen_samples.py), and test-only data and models (fake_vision_data.py,
data_files.py: image files, token files, LitData shards; buggy_models.py)."""
