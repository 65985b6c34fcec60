"""Shows what ``pip install`` is doing, one short line per step, instead of silence.

    pip install ... 2>&1 | python tools/install_progress.py

Reads pip's output and prints each package as it is collected (with a running
count and the elapsed time), each download over 5 MB, and the final install
step; everything else pip says goes to ``.venv/install.log``. pip's own exit
status is kept by the Makefile (``pipefail``); on failure the last lines of the
log are printed.
"""

from __future__ import annotations

import os
import re
import sys
import time

LOG = os.environ.get("INSTALL_LOG", os.path.join(".venv", "install.log"))


def main() -> int:
    t0 = time.time()
    collected = 0
    tail: list[str] = []
    with open(LOG, "w") as log:
        for line in sys.stdin:
            log.write(line)
            tail = (tail + [line.rstrip()])[-30:]
            took = f"{time.time() - t0:5.0f} s"
            if m := re.match(r"\s*Collecting (\S+)", line):
                collected += 1
                print(f"  {took}  [{collected:3d}] {m.group(1)}", flush=True)
            elif m := re.match(r"\s*Downloading (\S+) \(([\d.]+) (MB|GB)\)", line):
                size = float(m.group(2)) * (1024 if m.group(3) == "GB" else 1)
                if size >= 5:
                    print(f"  {took}        downloading {m.group(1)} ({m.group(2)} {m.group(3)})", flush=True)
            elif line.startswith("Installing collected packages"):
                n = len(line.split(":", 1)[1].split(","))
                print(f"  {took}  installing {n} packages (the largest take a minute) ...", flush=True)
            elif line.startswith("Successfully installed"):
                print(f"  {took}  done: {len(line.split()) - 2} packages installed", flush=True)
            elif line.startswith("ERROR"):
                print(line.rstrip(), flush=True)
    print(f"  pip's full output: {LOG}", flush=True)
    if tail and any(t.startswith("ERROR") for t in tail):
        print("\n".join(tail[-10:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
