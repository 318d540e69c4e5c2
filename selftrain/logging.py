"""One logging helper: timestamped lines on stderr, so stdout stays for results."""
from __future__ import annotations

import logging
import sys
import threading
import time

# bitsandbytes (imported by peft/transformers when installed) warns on every CPU import that an
# optional hub kernel package is missing; it falls back to its own CPU kernels, so the line is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


_lock = threading.Lock()  # backends log from worker threads: one whole line at a time


def log(message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}\n"
    with _lock:
        sys.stderr.write(line)
        sys.stderr.flush()
