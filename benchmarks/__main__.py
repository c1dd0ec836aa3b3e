"""``python -m benchmarks``: reproduce the original experiment on a local cluster (or --target)."""

from __future__ import annotations

import argparse
import sys

from .cluster import LocalCluster
from .seed import format_table, run_seed

STRATEGIES = ("lock", "lua")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--target", help="comma-separated base URLs of running replicas; "
                        "nothing is started")
    parser.add_argument("--replicas", type=int, default=3, help="local replicas to start")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]

    def run(urls: list[str]) -> int:
        failed = 0
        for strategy in strategies:
            result = run_seed(urls, strategy)
            print(format_table(result), flush=True)
            print()
            failed += bool(result.failures())
        return 1 if failed else 0

    if args.target:
        return run([url.rstrip("/") for url in args.target.split(",")])
    print(f"starting Redis and {args.replicas} replicas on 127.0.0.1 ...", flush=True)
    with LocalCluster(replicas=args.replicas) as cluster:
        print(f"redis {cluster.redis_url}; replicas {', '.join(cluster.urls)}\n", flush=True)
        return run(cluster.urls)


if __name__ == "__main__":
    sys.exit(main())
