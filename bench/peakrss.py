"""`python -m bench.peakrss COMMAND...`: run COMMAND, then print its peak RSS as `peak-rss-kb N`.

Why a separate process: Linux carries the high-water mark of a process's old address space over `exec`,
so the peak RSS that `wait4` reports for a child includes the pages of the process that forked it, as
they were just before the `exec`. A child of the benchmark (hundreds of MB of workload in memory) would
report at least the benchmark's own size. This process stays small (the standard library only) and
forks the command itself, so the figure it prints is the command's own. Exits with the command's code.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main() -> int:
    """Run the command given on the command line and report its peak RSS."""
    if len(sys.argv) < 2:
        print("usage: python -m bench.peakrss COMMAND [ARG...]", file=sys.stderr)
        return 2
    process = subprocess.Popen(sys.argv[1:])
    _, status, usage = os.wait4(process.pid, 0)
    print(f"peak-rss-kb {usage.ru_maxrss}", flush=True)  # Linux: kilobytes
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
