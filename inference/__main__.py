import sys
import time

_start = time.perf_counter()  # import time counts in FLARE's running time: measure it

from inference.cli import main  # noqa: E402

sys.exit(main(started_at=_start))
