import os
import sys

from genstudio.cli import main

code = main()
# core.distributed.launched_by_torchrun, read here without importing torch for every command.
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one process of a torchrun job
    from genstudio.core.runtime.distributed import end_process

    end_process(code)  # not sys.exit: see end_process
sys.exit(code)
