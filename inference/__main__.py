import os
import sys
import time

_start = time.perf_counter()  # import time counts in FLARE's running time: measure it

from inference.cli import main  # noqa: E402

rc = main(started_at=_start)
# Every output is written and closed by now (atomically renamed): skip the interpreter's teardown
# (unloading OpenVINO's and ITK's libraries, stopping their thread pools), which FLARE's timer counts.
sys.stdout.flush()
sys.stderr.flush()
os._exit(rc)
