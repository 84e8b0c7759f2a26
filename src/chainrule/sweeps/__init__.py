"""Hyperparameter sweeps: Optuna studies in a database that several workers share, resume and prune."""
