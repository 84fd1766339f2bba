#!/usr/bin/env python3
"""Holds the size limits of docs/architecture.md: no file in proxy/src over 700 lines, no
function over 80 lines outside tests.

A function runs from its `fn` line to the first later line that closes it at the same
indentation (rustfmt's layout, which `make test` checks first). Test code is skipped: files
named `tests.rs` or under a `tests/` folder, and everything after a `#[cfg(test)]` line in a
file. Prints every breach and exits 1 if there is one.

Usage: scripts/size-limits.py [ROOT]   (default: proxy/src)
"""
import pathlib
import re
import sys

MAX_FILE_LINES = 700
MAX_FN_LINES = 80
FN = re.compile(r'^(\s*)(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern "C")\s+)*fn\s+(\w+)')


def is_test_file(path: pathlib.Path) -> bool:
    return path.name == "tests.rs" or "tests" in path.parts[:-1]


def breaches(path: pathlib.Path, rel: str):
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > MAX_FILE_LINES:
        yield f"{rel}: {len(lines)} lines (limit {MAX_FILE_LINES})"
    if is_test_file(path):
        return
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            break
        m = FN.match(line)
        if not m:
            continue
        indent = m.group(1)
        end = None
        for j in range(i, len(lines)):
            if lines[j].rstrip().endswith(";") and j == i:
                break  # a declaration without a body
            if j > i and lines[j] == indent + "}":
                end = j
                break
        if end is not None and end - i + 1 > MAX_FN_LINES:
            yield f"{rel}:{i + 1}: fn {m.group(6)} is {end - i + 1} lines (limit {MAX_FN_LINES})"


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "proxy/src")
    found = []
    for path in sorted(root.rglob("*.rs")):
        found.extend(breaches(path, str(path)))
    for f in found:
        print(f)
    if found:
        print(f"{len(found)} size limit(s) broken", file=sys.stderr)
        return 1
    print(f"size limits hold in {root}: files <= {MAX_FILE_LINES} lines, functions <= {MAX_FN_LINES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
