"""Summarise a folded-stack profile (bench/prof/sitecustomize.py): inclusive and own share of
the samples per function, top N.

    python bench/prof/fold.py FILE [N]
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable


def summarize(lines: Iterable[str]) -> tuple[int, collections.Counter[str],
                                              collections.Counter[str]]:
    """(samples, inclusive, own) from `frame;frame;... count` lines. A frame that appears
    twice in one stack (recursion) counts once in its inclusive share."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames, count = stack.split(";"), int(n)
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return total, incl, own


def main() -> None:
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(sys.argv[1]) as fh:
        total, incl, own = summarize(fh)
    print(f"{total} samples")
    for title, counts in (("inclusive", incl), ("own", own)):
        print(f"{title}:")
        for f, n in counts.most_common(top):
            print(f"  {100 * n / max(total, 1):5.1f}%  {f}")


if __name__ == "__main__":
    main()
