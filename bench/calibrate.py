"""How fast core 0 is right now: a fixed pure-Python loop, best of five, in milliseconds.

On a shared virtual machine the same core can run the same code markedly slower from one minute
to the next (seen here: 27 to 46 ms for this loop on an idle core). The suite runs this on core 0
just before every measured 64-connection run and reports it beside the figures; it never
adjusts them.

    taskset -c 0 python -m bench.calibrate
"""

from __future__ import annotations

import time


def _loop() -> float:
    started = time.perf_counter()
    table: dict[int, str] = {}
    for i in range(300_000):
        table[i & 1023] = str(i)
    return time.perf_counter() - started


def main() -> None:
    print(f"{1000 * min(_loop() for _ in range(5)):.2f}")


if __name__ == "__main__":
    main()
