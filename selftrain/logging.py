"""One logging helper: timestamped lines on stderr, so stdout stays for results."""
from __future__ import annotations

import logging
import sys
import time

# bitsandbytes (imported by peft/transformers when installed) warns on every CPU import that an
# optional hub kernel package is missing; it falls back to its own CPU kernels, so the line is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
