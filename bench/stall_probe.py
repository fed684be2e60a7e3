"""How long the machine itself keeps a thread from running (a benchmark helper, not a test).

A thread asks to wake every 5 ms until its standard input closes, then prints JSON: how many
times it woke, how late (beyond the period asked), the worst wait, and how often it was held
off over 3 ms. Run as root it is a real-time thread (SCHED_FIFO): it then goes ahead of every process
of the stack on its core, so lateness is the machine's own (the hypervisor not running the virtual
CPUs, the kernel), not the benchmark's load. Without the privilege it runs as an ordinary thread
and says so (`realtime: false`): its lateness then includes waiting behind the stack.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

# Seconds between wake-ups: often enough to catch a stall of a few milliseconds, rarely enough not to
# weigh on the stack it shares the cores with (200 wake-ups a second against its ~20,000).
PERIOD = 0.005
# Lateness from which a wake-up counts as a stall.
STALL_MS = 3.0


def main() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        realtime = True
    except (PermissionError, OSError, AttributeError):
        realtime = False
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    wakeups = 0
    late_ms = 0.0
    worst = 0.0
    stalls = 0
    stalled_ms = 0.0
    started = time.monotonic()
    while not done.is_set():
        asked = time.monotonic()
        time.sleep(PERIOD)
        late = (time.monotonic() - asked - PERIOD) * 1000
        wakeups += 1
        late_ms += max(late, 0.0)
        worst = max(worst, late)
        if late > STALL_MS:
            stalls += 1
            stalled_ms += late
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        json.dumps(
            {
                "realtime": realtime,
                "seconds": round(elapsed, 2),
                "wakeups": wakeups,
                "mean_late_ms": round(late_ms / max(wakeups, 1), 3),
                "max_late_ms": round(worst, 1),
                "stalls_over_3ms": stalls,
                "stalled_ms_per_s": round(stalled_ms / elapsed, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
