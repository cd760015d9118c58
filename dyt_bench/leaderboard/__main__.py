"""``python -m dyt_bench.leaderboard``: the same as ``dyt-bench leaderboard``."""

import sys

from dyt_bench.leaderboard.cli import main

sys.exit(main())
