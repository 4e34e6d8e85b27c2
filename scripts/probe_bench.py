#!/usr/bin/env python
"""Same as ``ao probe-bench``: linear probes vs the oracle (see oracle/probe_bench.py).

    python scripts/probe_bench.py --out runs/probe-bench --n 200
"""
from __future__ import annotations

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main(["probe-bench", *sys.argv[1:]]))
