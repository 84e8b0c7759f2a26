"""The settings that say how long a run trains.

A continuation of a run may change them (chainrule.config.run_record), and a run whose training finished
trains on only when one of them changes (chainrule.training.fitting).
"""

TRAINING_LIMITS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def in_words() -> str:
    """`trainer.max_epochs, trainer.max_steps or trainer.max_time`, for messages."""
    return f"{', '.join(TRAINING_LIMITS[:-1])} or {TRAINING_LIMITS[-1]}"
