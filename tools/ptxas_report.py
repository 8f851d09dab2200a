"""Registers and spills of every CUDA kernel instantiation, from the output of nvcc -Xptxas -v.

    python tools/ptxas_report.py LOG [LOG ...] [--table build/cuda-registers.md] [--fail-on-spill]
                                 [--spilled-sources FILE]

Prints a summary (instantiations per architecture, the most registers, every instantiation that spills)
and writes the full table, sorted by spill stores then registers, to --table. Spills are local-memory
traffic inside a kernel's loops (issue #9 asks for none); registers above 128 per thread at 128 threads
per block cap the blocks per SM (65536 registers / (128 x registers)).

A kernel compiled again in a later LOG replaces its records from the earlier ones (a recompilation of
some sources, tools/check_cuda_build.sh --recheck-spills). --spilled-sources writes the .cu files whose
kernels spill, one per line, as named in the nvcc command that precedes their ptxas output (ninja
prints each command's output right after the command).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\w+)'")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGISTERS = re.compile(r"Used (\d+) registers")
SOURCE = re.compile(r"nvcc\b.* -c (\S+\.cu)\b")


def parse(text: str) -> List[Dict]:
    """One record per compiled entry function: name (mangled), arch, registers, stack, spill stores/loads,
    and the source compiled (None when the log does not name it)."""
    records, current, source = [], None, None
    for line in text.splitlines():
        if match := SOURCE.search(line):
            source = match.group(1)
        elif match := ENTRY.search(line):
            current = {"name": match.group(1), "arch": match.group(2), "registers": 0, "stack": 0,
                       "spill_stores": 0, "spill_loads": 0, "source": source}
            records.append(current)
        elif current is not None and (match := SPILLS.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, match.groups())
        elif current is not None and (match := REGISTERS.search(line)):
            current["registers"] = int(match.group(1))
    return records


def readable(mangled: List[str]) -> List[str]:
    """Demangled (c++filt, when there) and without the namespaces and parameter lists."""
    if shutil.which("c++filt") is None:
        return mangled
    names = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    short = []
    for name in names:
        name = re.sub(r"^void ", "", name)
        name = re.sub(r"\((actattn::)?\w+Params[^)]*\)$", "", name)
        name = re.sub(r"\((\w+::)*TileLayout\)(\d)", r"layout \2", name)  # an enum argument, as c++filt writes it
        short.append(name.replace("actattn::cuda::", "").replace("actattn::", "").replace("__nv_bfloat16", "bf16")
                     .replace("__half", "fp16"))
    return short


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--table", help="where to write the full table (markdown)")
    parser.add_argument("--fail-on-spill", action="store_true",
                        help="exit with status 2 when any instantiation spills (the CUDA checks' gate)")
    parser.add_argument("--spilled-sources", help="where to write the sources of the spilling kernels")
    args = parser.parse_args(argv)
    # A later log's compilation of a source replaces the earlier one's records. Keyed by source too:
    # a kernel template that two sources instantiate (the linear state kernels) is compiled in each.
    latest = {}
    for index, log in enumerate(args.logs):
        for position, record in enumerate(parse(Path(log).read_text(errors="replace"))):
            source = record["source"] if record["source"] is not None else (index, position)  # unnamed: kept
            latest[source, record["name"], record["arch"]] = record
    records = list(latest.values())
    if not records:
        print("ptxas report: no ptxas -v output found (was the build run with -Xptxas -v?)")
        return 1
    for record, name in zip(records, readable([r["name"] for r in records])):
        record["kernel"] = name
    records.sort(key=lambda r: (-r["spill_stores"], -r["registers"], r["kernel"], r["arch"]))
    rows = [f"| {r['kernel']} | {r['arch']} | {r['registers']} | {r['spill_stores']} | {r['spill_loads']} |"
            for r in records]
    header = ["| kernel | arch | registers | spill stores (bytes) | spill loads (bytes) |", "|---|---|---|---|---|"]
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text("\n".join(header + rows) + "\n")
    arches = sorted({r["arch"] for r in records})
    counts = ", ".join(f"{sum(r['arch'] == a for r in records)} for {a}" for a in arches)
    spilling = [row for row, r in zip(rows, records) if r["spill_stores"] or r["spill_loads"]]
    if args.spilled_sources:
        sources = sorted({r["source"] for r in records if (r["spill_stores"] or r["spill_loads"]) and r["source"]})
        Path(args.spilled_sources).write_text("".join(f"{source}\n" for source in sources))
    print(f"ptxas report: {len(records)} kernel instantiations ({counts}); most registers "
          f"{max(r['registers'] for r in records)}; {len(spilling)} of them spill"
          + (f" (full table: {args.table})" if args.table else ""))
    if spilling:
        print("\n".join(header + spilling))
        if args.fail_on_spill:
            print(f"ptxas report: FAILED: {len(spilling)} kernel instantiations spill to local memory (issue #9 "
                  "asks for none: bound their registers or split their accumulators)")
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
