"""Command line: a thin layer over the library. Bad input -> one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from strokescan import __version__
from strokescan.errors import StrokescanError

EXIT_BAD_INPUT = 2

log = logging.getLogger("strokescan")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from strokescan.io import load_scan
    from strokescan.preprocessing.orientation import estimate_scan_rotation

    scan = load_scan(args.path, series=args.series)
    summary = scan.summary(include_identifiers=args.show_identifiers)
    summary["rotation_estimate_deg"] = estimate_scan_rotation(scan)
    print(json.dumps(summary, indent=None if args.compact else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strokescan",
        description="Find intracranial hemorrhage and stroke on brain CT. Research and triage support, not diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"strokescan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "inspect",
        help="print a JSON summary of what was read from a scan",
        description="Read PATH (JPEG/PNG slice, DICOM file, DICOM folder or .zip, NIfTI) and print what was read: "
        "modality, shape, whether values are Hounsfield units, spacing, slices, orientation and the estimated "
        "in-plane rotation. Patient-identifying tags are never printed unless --show-identifiers is given.",
    )
    p.add_argument("path", help="file or folder to read")
    p.add_argument("--series", help="series index or SeriesInstanceUID when a folder holds several")
    p.add_argument("--compact", action="store_true", help="one line of JSON instead of indented output")
    p.add_argument(
        "--show-identifiers",
        action="store_true",
        help="also print patient/study/series identifiers (opt-in: they identify a patient)",
    )
    p.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except StrokescanError as exc:
        print(f"strokescan: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("strokescan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
