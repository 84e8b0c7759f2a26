"""The resolvers chainrule's config tree uses besides Hydra's: `${run_dir:<parent>,<time format>}` names (and
creates) a run directory (chainrule.launch.run_id), `${cwd:}` is the directory the command was started from, and
`${quick:<value>,<quick value>}` is the second value when CHAINRULE_QUICK is set (README: "Try a command
quickly"): a few batches per epoch, a few trials per sweep; `${groups_help:}` lists the config groups and
their options for `--help`.

`${cwd:}` rather than Hydra's `${hydra:runtime.cwd}`: a multirun resolves its sweep directory (which
names paths.log_dir) before Hydra sets its runtime values, and a config composed outside a Hydra app
(tests, chainrule-submit) has none.
"""

import os
from typing import Any

from omegaconf import OmegaConf

from chainrule.config.groups import groups_help
from chainrule.launch.run_id import new_run_dir

#: Set (to anything but 0) to try any command quickly: see README.md.
QUICK_ENV = "CHAINRULE_QUICK"


def quick(value: Any, quick_value: Any) -> Any:
    return quick_value if os.environ.get(QUICK_ENV, "0") not in ("", "0") else value


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir"):
        # Cached, as Hydra's `now`: one composition names (and creates) one directory.
        OmegaConf.register_new_resolver("run_dir", new_run_dir, use_cache=True)
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    if not OmegaConf.has_resolver("quick"):
        OmegaConf.register_new_resolver("quick", quick)
    if not OmegaConf.has_resolver("groups_help"):
        OmegaConf.register_new_resolver("groups_help", groups_help)
