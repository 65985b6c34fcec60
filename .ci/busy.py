"""Run a command while other processes keep every core busy (a shared CI machine).

    python .ci/busy.py -- make test

Starts one spinning process per core at normal priority, runs the command, stops
them, and exits with the command's status. `make test-busy` runs the suite this way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print("usage: python .ci/busy.py -- COMMAND ...", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    # Each spinner stops when this process is gone, however it ends (a kill skips the finally below).
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cores)]
    started = time.monotonic()
    print(f"busy: {cores} spinning process(es) on {cores} core(s) while running: {' '.join(command)}", flush=True)
    try:
        rc = subprocess.call(command)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"busy: exit {rc} after {time.monotonic() - started:.0f} s with every core kept busy", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
