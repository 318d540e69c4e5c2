"""What the benchmarks share: a comma-separated choice from a fixed list."""
from __future__ import annotations


def pick(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """The names in `text` ("a,b,c"), each one of `allowed`, or exit with the unknown ones named."""
    names = text.split(",")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {', '.join(unknown)}: expected some of {', '.join(allowed)}")
    return names
