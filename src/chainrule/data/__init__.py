"""LightningDataModules, one per source: data held in memory and split from a seed (base.py), and data read
from files sample by sample (image_folder.py, token_file.py: indexed.py) or streamed from shards
(streaming.py). See docs/data.md."""
