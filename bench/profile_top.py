"""Summarise a py-spy collapsed-stack profile (`bench/scale.py --profile DIR`): where the operator's CPU goes.

    .venv/bin/python bench/profile_top.py DIR/startup.txt [--top 25] [--match stampede]

Prints the share of samples per function, self (the leaf frame) and inclusive (anywhere on the stack),
so the hot spots and their callers can be read without a flame-graph viewer.
"""

from __future__ import annotations

import argparse
from collections import Counter


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        text = lines.read().splitlines()
    for line in text:
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only inclusive rows whose frame contains this text")
    args = parser.parse_args(argv)
    stacks = load(args.path)
    total = sum(n for _, n in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples")
    print("-- self --")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("-- inclusive --")
    rows = [(f, n) for f, n in inclusive.most_common() if args.match in f][: args.top]
    for frame, n in rows:
        print(f"{100 * n / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
