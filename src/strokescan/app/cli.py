"""Command line: parses arguments, calls the library, prints. Bad input -> one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from strokescan import __version__
from strokescan.app.batch import BatchItem, BatchRunner, PredictorOptions
from strokescan.app.training_commands import add_training_commands
from strokescan.app.web.commands import add_web_commands
from strokescan.config import SAMPLES_DIR, rotation_enabled
from strokescan.core.labels import SUBTYPE_ABBREVIATIONS
from strokescan.errors import StrokescanError
from strokescan.inference import Predictor, ScanResult
from strokescan.inference.quantification import describe
from strokescan.io import load_scan
from strokescan.io.scope import scope_problem
from strokescan.models.rotation import RotationEstimator

EXIT_BAD_INPUT = 2
DEMO_OUTPUT_DIR = "strokescan-demo-overlays"
SCHEDULER_ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d{1,5}")  # what --scheduler takes

log = logging.getLogger("strokescan")


def _cmd_inspect(args: argparse.Namespace) -> int:
    scan = load_scan(args.path, series=args.series)
    summary = scan.summary(include_identifiers=args.show_identifiers)
    summary["out_of_scope"] = scope_problem(scan)
    estimator = RotationEstimator()
    summary["rotation_estimate_deg"] = estimator.estimate_scan(scan)  # the network's reading, for people
    summary["rotation_applied_deg"] = estimator.slice_angles(scan, rotation_enabled())[0]  # what analysis removes
    print(json.dumps(summary, indent=None if args.compact else 2))
    return 0


def _print_table(result: ScanResult) -> None:
    flag = lambda positive: "POSITIVE" if positive else "negative"  # noqa: E731
    print(f"{result.path}  ({result.n_slices} slice{'s' if result.n_slices > 1 else ''})")
    if result.out_of_scope:
        print(f"  OUT OF SCOPE (analysed because --force was given): {result.out_of_scope}")
    for s in result.slices:
        where = "" if s.slice_index is None else f"slice {s.slice_index:>3}  "
        note = "" if s.brain_visible else "  (little or no brain on this slice: never flagged)"
        sizes = ""
        if s.lesions:
            sizes = "".join(f"  {k} {v.area:.0f} {v.unit}" for k, v in s.lesions.items() if v.pixels)
        print(f"  {where}p={s.probability:.3f}  {flag(s.positive)}{sizes}{note}")
    if result.is_volume:
        print(f"  scan: p={result.probability:.3f}  {flag(result.positive)}  ({result.operating_point} operating "
              f"point, threshold {result.scan_threshold:.3f})")
        likely = [f"{SUBTYPE_ABBREVIATIONS[k]} {v:.2f}" for k, v in result.subtypes.items() if v >= 0.5]
        if likely:
            print(f"  subtypes (probability >= 0.5): {', '.join(likely)}")
    if result.quantification is not None and result.is_volume:
        for line in describe(result.quantification):
            print(f"  {line}")


def _report(item: BatchItem, as_json: bool) -> None:
    if as_json:
        for line in item.json_lines():
            print(json.dumps(line))
    elif item.error is not None:
        print(f"strokescan: error: {item.error}", file=sys.stderr)
    else:
        assert item.result is not None
        _print_table(item.result)
    sys.stdout.flush()


def _predict(args: argparse.Namespace, paths: Sequence[str]) -> int:
    """Analyse ``paths`` and print each result; exit status 2 when any input failed. With ``--workers N`` (N >= 2)
    or ``--scheduler`` (``predict`` only) the scans are analysed on a Dask cluster, printed in the same order."""
    options = PredictorOptions(args.model, segmenter_dir=args.segmenter,
                               segment=bool(args.masks_dir or args.overlays_dir or args.segmenter),
                               operating_point=args.operating_point,
                               correct_rotation=False if args.no_rotation else None,
                               experimental_infarct=True if args.experimental_infarct else None)
    batch_options = {"masks_dir": args.masks_dir, "overlays_dir": args.overlays_dir, "series": args.series,
                     "force": args.force, "progress": args.json and sys.stderr.isatty(),
                     "heatmaps_dir": args.heatmaps_dir}
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if scheduler or (workers or 1) > 1:
        from strokescan.app.distributed import DaskBatchRunner  # Dask is imported only when asked for

        items = DaskBatchRunner(options, workers=None if scheduler else workers, scheduler=scheduler,
                                **batch_options).run(paths)
    else:
        items = BatchRunner(options.build(), **batch_options).run(paths)
    failed = 0
    for item in items:
        failed += item.error is not None
        _report(item, args.json)
    return EXIT_BAD_INPUT if failed else 0


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of worker processes, 1 or more")
    return int(text)


def _scheduler_address(text: str) -> str:
    if not SCHEDULER_ADDRESS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: give the scheduler's address as tcp://HOST:PORT")
    return text


def _cmd_predict(args: argparse.Namespace) -> int:
    return _predict(args, args.paths)


def _cmd_demo(args: argparse.Namespace) -> int:
    say = sys.stderr if args.json else sys.stdout  # with --json, stdout holds JSON lines only
    print("strokescan demo: analysing the bundled sample scans (see their ATTRIBUTION.md)\n", file=say)
    if not (args.masks_dir or args.overlays_dir):
        args.overlays_dir = Path(DEMO_OUTPUT_DIR)
    rc = _predict(args, [str(SAMPLES_DIR)])
    if args.overlays_dir:
        print(f"\nlesion overlays (red hemorrhage, yellow edema, blue infarct) written to {args.overlays_dir}/", file=say)
    return rc


def _yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r}: answer yes or no")
    return text.lower() == "yes"


def _cmd_ich_score(args: argparse.Namespace) -> int:
    from strokescan.inference.ich_score import ich_score, ich_score_for

    if args.scan is not None:
        result = Predictor(segment=True).analyse(
            load_scan(args.scan, series=args.series))
        score = ich_score_for(result, args.gcs, args.age, args.ivh, args.infratentorial, args.volume_ml)
    else:
        score = ich_score(args.gcs, args.age, args.volume_ml, args.ivh, args.infratentorial)
    doc = score.to_dict()
    if args.json:
        print(json.dumps(doc))
        return 0
    for name, c in doc["components"].items():
        value = c["value"]
        value = "not given" if value is None else ("yes" if value else "no") if isinstance(value, bool) else value
        points = "?" if c["points"] is None else c["points"]
        print(f"  {name:<17} {str(value):<10} {points} / {c['max_points']}  {c['source'] or ''}")
    if doc["total"] is None:
        print(f"ICH score: incomplete ({', '.join(doc['missing'])} missing): between {doc['possible'][0]} and "
              f"{doc['possible'][1]}")
    else:
        print(f"ICH score: {doc['total']} / 6 (30-day mortality in the 2001 derivation cohort: "
              f"{doc['mortality_30d_percent_in_derivation_cohort']} %; a population figure, not this patient's prognosis)")
    for note in doc["notes"]:
        print(f"note: {note}")
    return 0


def _cmd_listen(args: argparse.Namespace) -> int:
    """``strokescan listen``: the DICOM stack is imported only here (it adds about 1 s to every start)."""
    from strokescan.app.integration.listener import add_listen_arguments, run_listen

    parser = argparse.ArgumentParser(
        prog="strokescan listen",
        description="A DICOM Storage SCP (C-ECHO, C-STORE) on this machine (127.0.0.1) unless --host says otherwise: "
        "each series it receives is analysed through the web app's job queue and the results go back as DICOM "
        "SEG, TID 1500 SR and a key image by C-STORE to --dest (and FHIR, if configured). Research software, "
        "not a diagnosis.")
    add_listen_arguments(parser)
    return run_listen(parser.parse_args(args.listen_args))


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
        "in-plane rotation, and whether the models were made for it (out_of_scope: null, or the reason). "
        "Patient-identifying tags are never printed unless --show-identifiers is given.",
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

    def add_model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, help="classifier folder (default: the bundled model)")
        p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
        p.add_argument("--operating-point", choices=("balanced", "sensitive"), default=None,
                       help="which stored thresholds the flags use: 'balanced' (the default: highest sensitivity + "
                       "specificity on cross-validation) or 'sensitive' (sensitivity >= 0.95, more false alarms); "
                       "their figures are in the model card")
        p.add_argument("--series", help="series index or SeriesInstanceUID when a folder holds several")
        p.add_argument("--masks-dir", type=Path, help="also segment lesions; write one PNG of class ids per slice "
                       "(0 background, 1 hemorrhage, 2 edema, 3 infarct) in the input's size, named <stem>.png or "
                       "<stem>_<slice_index>.png, and add mask paths, areas and volumes to the output")
        p.add_argument("--overlays-dir", type=Path, help="also segment lesions; write colour overlays for people "
                       "(red hemorrhage, yellow edema, blue infarct)")
        p.add_argument("--heatmaps-dir", type=Path, help="also explain the flagged slices (or, when none is, the most "
                       "suspicious slice showing brain): write the detector's Grad-CAM heat map over each, with a "
                       "cross at its peak, named like the overlays, and add 'explanation' (method, layer, peak "
                       "[row, col], score) to those slices' output. The map shows where the detector looked, not a "
                       "lesion outline: its peak often misses small bleeds (docs/explanations.md)")
        p.add_argument("--segmenter", type=Path, help="segmentation model folder (default: the bundled one)")
        p.add_argument("--force", action="store_true", help="also analyse inputs the models were not made for (MR, "
                       "SEG/SR objects, other body parts, localizers, non-axial reformats); their results are "
                       'marked "out_of_scope" with the reason')
        p.add_argument("--no-rotation", action="store_true", help="skip the rotation step: analyse every slice as it "
                       "is stored (a DICOM axial series is brought upright by its header, a 2-D image only when the "
                       "orientation network reads a quarter turn with confidence; docs/rotation.md). Also "
                       "STROKESCAN_ROTATION=off, for every interface")
        p.add_argument("--experimental-infarct", action="store_true", help="also output the infarct masks, which are "
                       "NOT validated (Dice 0.19 on 13 slices; docs/segmentation.md); also "
                       "STROKESCAN_EXPERIMENTAL_INFARCT=1")

    p = sub.add_parser(
        "predict",
        help="probability of hemorrhage per slice and per scan",
        description="Analyse each PATH (image, DICOM file/folder/zip, NIfTI, or a folder of them). With --json: one "
        "object per slice (path, slice_index, probability, positive) and, for a multi-slice scan, one more with "
        '"scan": true. Inputs that cannot be read get an error line; the others are still analysed; the exit '
        "status is 2 if any input failed. Inputs the models were not made for (anything but axial head CT and its "
        "8-bit brain-window exports) are refused with the reason unless --force is given. Research and triage "
        "support, not a diagnosis.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_model_options(p)
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=_worker_count, metavar="N", help="analyse the scans in N worker processes "
                        "of a Dask cluster started on this machine (127.0.0.1 only, no dashboard) for this run; "
                        "each loads the models once. Results are printed in input order, as without it. Default 1: "
                        "one process, one scan after another (docs/batch.md)")
    engine.add_argument("--scheduler", type=_scheduler_address, metavar="ADDRESS", help="analyse the scans on the "
                        "running Dask cluster whose scheduler is at ADDRESS (tcp://HOST:PORT); its workers need "
                        "strokescan installed, and the inputs and the output folders must be on a file system they "
                        "share, at the same paths (paths are made absolute; docs/batch.md)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="analyse the bundled sample slices (the README's first command)")
    add_model_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "ich-score", help="the ICH score from the bedside data and, given a scan, strokescan's clot volume",
        description="The ICH score (Hemphill 2001, 0-6): GCS 3-4 = 2, 5-12 = 1; clot volume >= 30 mL; "
        "intraventricular blood; infratentorial origin; age >= 80. With SCAN, the clot volume is strokescan's "
        "planimetric measurement (when the scan's spacing is known; check it on the overlays, its accuracy is in "
        "the segmenter's model card) unless --volume-ml is given. Intraventricular blood and infratentorial origin "
        "come from the clinician only; what is not given leaves the score incomplete, with the range it could "
        "take. Research software, not a diagnosis.")
    p.add_argument("scan", nargs="?", metavar="SCAN", help="head CT to measure the clot on (optional)")
    p.add_argument("--gcs", type=int, help="Glasgow Coma Scale total, 3-15")
    p.add_argument("--age", type=int, help="age in years")
    p.add_argument("--ivh", type=_yes_no, metavar="yes|no", help="intraventricular blood (the reader's call)")
    p.add_argument("--infratentorial", type=_yes_no, metavar="yes|no", help="infratentorial origin (the reader's call)")
    p.add_argument("--volume-ml", type=float, help="clot volume in mL (e.g. the reader's ABC/2): overrides the scan's")
    p.add_argument("--series", help="series index or SeriesInstanceUID when SCAN holds several")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=_cmd_ich_score)

    add_web_commands(sub)
    p = sub.add_parser("listen", add_help=False, help="receive head CT by DICOM, analyse it, send DICOM SEG/SR "
                       "and a key image back (docs/integration.md; 'strokescan listen --help' for its options)")
    p.add_argument("listen_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_listen)
    add_training_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "listen":  # its options are parsed by _cmd_listen
        args.listen_args = [*extra, *args.listen_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
