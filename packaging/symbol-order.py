#!/usr/bin/env python3
"""Writes packaging/symbol-order.txt, the order build.rs asks the linker (LLD) to lay the text out in.

usage: packaging/symbol-order.py BINARY MAP CALLGRIND_OUT... > packaging/symbol-order.txt
(packaging/symbol-order-trace.sh builds BINARY and MAP, runs the traces below and calls this)

The names must be those of the release profile itself (cargo hashes the profile into every mangled
name), so BINARY is the release build linked with a map, for example
  cargo rustc --release --bin lxc_autoscale -- -C link-arg=-Wl,-Map=/tmp/lxc_autoscale.map
and MAP that map. Each CALLGRIND_OUT is a run of BINARY under
  valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no
(README "Performance", resident text): give the steady daemon cycles first (callgrind_control -z
after the first cycle), then the daemon from its start, then `--once --dry-run`. Every function
that ran is listed once, each file's new ones in address order.
"""
import bisect
import re
import sys

# An input section line of an LLD map: VMA, LMA, size, alignment, then `file:(.text.NAME)`.
SECTION = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+.*:\(\.text\.(?:unlikely\.)?(\S+)\)$")


def functions(map_path):
    """(start, size, name) of every function section in the map, by address."""
    found = []
    with open(map_path, errors="replace") as f:
        for line in f:
            m = SECTION.match(line)
            if m and int(m.group(2), 16) > 0:
                found.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return sorted(found)


def main():
    binary, map_path, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
    funcs = functions(map_path)
    starts = [f[0] for f in funcs]
    listed = set()
    for out in outs:
        ran, obj, in_binary = set(), None, False
        with open(out, errors="replace") as f:
            for line in f:
                if line.startswith("ob="):
                    obj = line[3:].strip()
                elif line.startswith("fn="):
                    in_binary = obj == binary
                elif in_binary and line.startswith("0x"):
                    addr = int(line.split()[0], 16)
                    i = bisect.bisect_right(starts, addr) - 1
                    if i >= 0 and addr < funcs[i][0] + funcs[i][1]:
                        ran.add(i)
        for i in sorted(ran - listed):
            print(funcs[i][2])
        listed |= ran


if __name__ == "__main__":
    main()
