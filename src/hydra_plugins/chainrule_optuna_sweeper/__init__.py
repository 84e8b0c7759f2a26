"""chainrule's Optuna sweeper for Hydra: `hydra/sweeper=chainrule_optuna` (see conf/hparams_search/)."""
