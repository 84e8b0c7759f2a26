"""Optimization pieces: parameter groups, learning-rate schedules and losses."""
