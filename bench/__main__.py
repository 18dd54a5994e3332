"""`python -m bench`: run every benchmark and write docs/benchmarks.md with its plots."""

from __future__ import annotations

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
