"""How the processes of a run start and find each other: launcher detection, device arithmetic,
starting local ranks, rank-prefixed console, and the run id that names a run directory on every rank."""
