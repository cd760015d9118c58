"""``python -m dyt_bench.grid``: the same as ``dyt-bench grid``."""

import sys

from dyt_bench.grid.cli import main

sys.exit(main())
