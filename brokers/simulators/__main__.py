"""Run a broker simulator: ``python -m brokers.simulators kite --port 9001``."""

import argparse
import json
import sys

from . import SIMULATORS, simulator_class
from .base import SimulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brokers.simulators", description=__doc__)
    parser.add_argument("broker", choices=sorted(SIMULATORS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--latency-ms", type=int, default=0, help="delay added to every request")
    parser.add_argument("--seed", help="JSON file with apps, users, instruments (see --print-seed)")
    parser.add_argument("--print-seed", action="store_true", help="print the default seed and exit")
    args = parser.parse_args(argv)

    cls = simulator_class(args.broker)
    if args.print_seed:
        json.dump(cls.default_seed, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    seed = None
    if args.seed:
        with open(args.seed) as handle:
            seed = json.load(handle)
    server = SimulatorServer(cls(seed, latency_ms=args.latency_ms), args.host, args.port)
    print(f"{args.broker} simulator on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
