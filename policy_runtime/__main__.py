"""``python -m policy_runtime BUNDLE [--host H] [--port P]``: serve a bundle (the serving
image's command; ``invoke serve`` on a workstation)."""

from __future__ import annotations

import argparse
import sys

from policy_runtime.bundle import BundleError
from policy_runtime.serve import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policy_runtime", description=__doc__)
    parser.add_argument("bundle", help="a bundle folder from `invoke export`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args(argv)
    try:
        serve(args.bundle, host=args.host, port=args.port)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
