"""What tests in more than one folder share, each piece defined once: paths (paths.py), starting processes
with one environment (processes.py), named run presets (presets.py), reading a run's metrics.csv
(metrics.py) and its offline W&B files (wandb_runs.py), and test-only data, models and callbacks."""
