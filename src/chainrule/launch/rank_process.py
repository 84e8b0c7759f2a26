"""Entry point of ranks 1..N-1 started by chainrule.launch.local_ranks.on_all_ranks (`python -m`).

Runs the function named in CHAINRULE_RANK_ENTRY on the resolved config in CHAINRULE_RANK_CONFIG, both
set by rank 0. No Hydra app runs here: rank 0 already composed the config and owns the run directory.
"""

import logging
import os
import sys
from importlib import import_module

from chainrule.launch.console import prefix_console
from chainrule.launch.detect import CONFIG_ENV, ENTRY_ENV
from chainrule.launch.local_ranks import destroy_process_group


def main() -> None:
    # Before the heavy imports, so that everything this rank prints carries its prefix.
    prefix_console(int(os.environ["RANK"]))
    from omegaconf import OmegaConf

    from chainrule.core import console
    from chainrule.core.errors import ChainruleError

    console.quiet_libraries()

    # Popped so that processes this rank starts (data loader workers) do not look like ranks.
    module, _, name = os.environ.pop(ENTRY_ENV).partition(":")
    cfg = OmegaConf.create(os.environ.pop(CONFIG_ENV))
    fn = getattr(import_module(module), name)
    try:
        fn(cfg)
    except ChainruleError as error:
        console.error_line(str(error))
        sys.exit(2)
    destroy_process_group()
    # End without the interpreter's teardown: C++ destructors of threads that torch.distributed leaves
    # behind (gloo's, a device mesh's groups) have aborted a rank at exit (-6) after a run that succeeded.
    # The run's work is written and joined by now; only buffered output is left to flush.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
