"""Runs the project's benchmarks and writes ``results/<name>.json`` and ``results/latest.md``.

    python -m benchmarks.run                  # all of P1..P5 (<= 10 min on 2 CPU cores)
    python -m benchmarks.run --quick          # small shapes (<= 1 min), into results/quick/
    python -m benchmarks.run --only P1,P4     # a subset; latest.md still lists every result file
    python -m benchmarks.run --device cuda    # P1 also in bf16 on the GPU

Everything runs offline: the test video is generated (and cached under ``results/cache/``), models are
built from configs with random weights.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks.common import IDS, RESULTS_DIR, machine_info, markdown_table, render_latest, write_results

logger = logging.getLogger("benchmarks")

# id -> module under benchmarks/; its name is also the result file's
BENCHMARKS = {"P1": "compressor", "P2": "prefill", "P3": "video", "P4": "flops", "P5": "demo_stages"}


def parse_ids(text: str) -> list[str]:
    ids = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = sorted(set(ids) - set(IDS))
    if unknown or not ids:
        raise argparse.ArgumentTypeError(f"--only {text!r}: unknown ids {unknown}; choose among {', '.join(IDS)}")
    return ids


def main(argv: list[str] | None = None) -> dict[str, list]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes and one repeat: a smoke run")
    parser.add_argument("--only", type=parse_ids, default=list(IDS), help="comma-separated ids, e.g. P1,P3")
    parser.add_argument("--out", type=Path, default=None,
                        help="result folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where P1's bf16 run goes (CPU fp32 always runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out_dir = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    # Machines with idle cores would otherwise give numbers no 2-core laptop reproduces; say what ran.
    logger.info("torch threads: %d (set OMP_NUM_THREADS to change)", torch.get_num_threads())

    results = {}
    for bench_id in args.only:
        name = BENCHMARKS[bench_id]
        module = importlib.import_module(f"benchmarks.{name}")
        logger.info("%s (%s)...", bench_id, name)
        start = time.perf_counter()
        records = module.run(quick=args.quick, device=args.device)
        seconds = time.perf_counter() - start
        meta = {"command": command.strip(), "quick": args.quick, "seconds": seconds,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info()}
        path = write_results(out_dir, name, records, meta)
        logger.info("%s done in %.0f s -> %s", bench_id, seconds, path)
        results[bench_id] = records
    latest = render_latest(out_dir)
    print(markdown_table([r.__dict__ for records in results.values() for r in records]))
    print(f"\nwrote {os.path.relpath(latest)}")
    return results


if __name__ == "__main__":
    main()
