"""One logging helper: timestamped lines on stderr, so stdout stays for results."""
from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
