"""The trainer that runs inside every training pod and behind `finetune run --local`.

Importing this package is cheap: torch and friends are imported only by the modules that train.
"""

import time

# When this process began to work, before torch and the model: what its startup is counted
# from (callbacks.TimeAccounting). Set at the package's first import, the first thing
# `python -m finetune_trainer` does.
PROCESS_STARTED = time.monotonic()
