"""chainrule: Hydra-configured Lightning training for PyTorch models, from a laptop to a SLURM cluster."""

__version__ = "0.1.0"
