"""LightningDataModules, one per source. All hold their data in memory and split it from a seed."""
