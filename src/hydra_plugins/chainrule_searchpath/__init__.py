"""Hydra looks for chainrule's config options in the user's own folders too: see searchpath.py."""
