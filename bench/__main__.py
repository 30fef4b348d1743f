"""``python -m bench`` (``make bench``): run the benchmarks, print the table, write JSON.

    python -m bench                     every benchmark, full size (about 8 minutes)
    python -m bench --quick             every benchmark, fewer runs and cycles (under 2)
    python -m bench scale check_time    only these
    python -m bench --list              what there is
    python -m bench --show bench/results/latest.json   a stored run, as Markdown
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULTS
from bench.report import document, machine, markdown, table, write_json
from bench.suite import BENCHMARKS, run_one


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer runs and cycles")
    parser.add_argument("--runs", type=int, default=None, help="runs per benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json",
                        help="where to write the JSON (default: bench/results/latest.json)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--show", type=Path, metavar="JSON",
                        help="print a stored run as a Markdown table and exit")
    args = parser.parse_args(argv)
    if args.show is not None:
        print(markdown(json.loads(args.show.read_text(encoding="utf-8"))))
        return 0
    if args.list:
        for bench in BENCHMARKS.values():
            print(f"{bench.name:16s} {bench.about}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (see --list)")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [BENCHMARKS[n] for n in (args.names or BENCHMARKS)]

    started = time.time()
    info = machine()
    print(f"{info['cpu']}, {info['nproc']} CPUs, Python {info['python']}, load average "
          f"{' '.join(map(str, info['load_average']))}", flush=True)
    results = []
    for bench in chosen:
        size = bench.size(quick=args.quick, runs=args.runs)
        print(f"-- {bench.name}: {bench.about} ...", flush=True)
        result = run_one(bench, size)
        results.append(result)
        print(table([result]), flush=True)
        if result.error:
            print(result.notes[-1], file=sys.stderr)
        print(f"   ({result.seconds:.0f} s)\n", flush=True)

    options = {"argv": list(argv if argv is not None else sys.argv[1:]), "quick": args.quick,
               "runs": args.runs, "names": [b.name for b in chosen]}
    doc = document(results, options=options, started=started, machine_info=info)
    write_json(args.out, doc)
    print(table(results))
    for result in results:
        for note in result.notes if not result.error else []:
            print(f"\n{result.name}: {note}")
    print(f"\n{len(results)} benchmark(s) in {doc['seconds']:.0f} s; JSON: {args.out}")
    failed = any(r.error for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
