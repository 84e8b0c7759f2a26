"""Checkpoint files: atomic writes, safe loading and integrity (`io`), and which one a run continues
from (`discovery`)."""
