"""Command line: a thin layer over the library. Bad input -> one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from strokescan import __version__
from strokescan.config import SEED
from strokescan.errors import OutputError, StrokescanError

if TYPE_CHECKING:
    from strokescan.io import Scan
    from strokescan.prediction import ScanResult

EXIT_BAD_INPUT = 2
DEMO_OUTPUT_DIR = "strokescan-demo-overlays"

log = logging.getLogger("strokescan")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from strokescan.io import load_scan
    from strokescan.preprocessing.orientation import estimate_scan_rotation

    scan = load_scan(args.path, series=args.series)
    summary = scan.summary(include_identifiers=args.show_identifiers)
    summary["rotation_estimate_deg"] = estimate_scan_rotation(scan)
    print(json.dumps(summary, indent=None if args.compact else 2))
    return 0


def _iter_inputs(paths: Sequence[str]) -> Iterator[tuple[str, list[Path] | StrokescanError]]:
    from strokescan.io import discover_inputs

    for given in paths:
        try:
            yield given, discover_inputs(given)
        except StrokescanError as exc:
            yield given, exc


def output_stem(path: Path, taken: set[str]) -> str:
    """File-name stem for an input's masks/overlays (``scan.nii.gz`` -> ``scan``; a DICOM folder -> its name),
    made unique within one run so that two inputs never overwrite each other's output."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".zip"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem if path.is_file() else name
    stem, k = name or "scan", 2
    while stem in taken:
        stem, k = f"{name}-{k}", k + 1
    taken.add(stem)
    return stem


def _write_segmentation(result: ScanResult, scan: Scan, args: argparse.Namespace, taken: set[str]) -> None:
    from strokescan.segmentation import write_masks, write_overlays

    stem = output_stem(scan.source_path, taken)
    try:
        if args.masks_dir:
            for s, p in zip(result.slices, write_masks(result.masks, args.masks_dir, stem)):
                s.mask_path = str(p)
        if args.overlays_dir:
            write_overlays(scan, result.masks, args.overlays_dir, stem)
    except OSError as exc:
        raise OutputError(f"cannot write masks/overlays for {scan.source_path}: {exc.strerror or exc}") from None


def _print_table(result: ScanResult) -> None:
    flag = lambda positive: "POSITIVE" if positive else "negative"  # noqa: E731
    print(f"{result.path}  ({result.n_slices} slice{'s' if result.n_slices > 1 else ''})")
    for s in result.slices:
        where = "" if s.slice_index is None else f"slice {s.slice_index:>3}  "
        note = "" if s.brain_visible else "  (little or no brain on this slice)"
        sizes = ""
        if s.lesions:
            sizes = "".join(f"  {k} {v['area']:.0f} {v['unit']}" for k, v in s.lesions.items() if v["pixels"])
        print(f"  {where}p={s.probability:.3f}  {flag(s.positive)}{sizes}{note}")
    if result.is_volume:
        print(f"  scan: p={result.probability:.3f}  {flag(result.positive)}  (threshold {result.scan_threshold:.3f})")
    if result.quantification is not None and result.is_volume:
        from strokescan.quantification import describe

        for line in describe(result.quantification):
            print(f"  {line}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from strokescan.io import load_scan
    from strokescan.prediction import Predictor

    segment = bool(args.masks_dir or args.overlays_dir)
    predictor = Predictor(args.model, segmenter_dir=args.segmenter, segment=segment)
    failed, taken = 0, set()
    for given, found in _iter_inputs(args.paths):
        targets: list[tuple[str, Path | None, StrokescanError | None]]
        if isinstance(found, StrokescanError):
            targets = [(given, None, found)]
        else:
            targets = [(str(p), p, None) for p in found]
        for shown, path, error in targets:
            if error is None:
                try:
                    scan = load_scan(path, series=args.series)
                    result = predictor.analyse(scan)
                    if segment:
                        _write_segmentation(result, scan, args, taken)
                except StrokescanError as exc:
                    error = exc
            if error is not None:
                failed += 1
                if args.json:
                    print(json.dumps({"path": shown, "error": str(error), "error_type": type(error).__name__}))
                else:
                    print(f"strokescan: error: {error}", file=sys.stderr)
                continue
            if args.json:
                for line in result.json_lines():
                    print(json.dumps(line))
            else:
                _print_table(result)
            sys.stdout.flush()
    return EXIT_BAD_INPUT if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from strokescan.config import SAMPLES_DIR
    from strokescan.segmentation import DEFAULT_SEGMENTER_DIR

    say = sys.stderr if args.json else sys.stdout  # with --json, stdout holds JSON lines only
    print("strokescan demo: analysing the bundled sample scans (see their ATTRIBUTION.md)\n", file=say)
    args.paths, args.series = [str(SAMPLES_DIR)], None
    has_segmenter = args.segmenter or (DEFAULT_SEGMENTER_DIR / "segmenter.pt").is_file()
    if has_segmenter and not (args.masks_dir or args.overlays_dir):
        args.overlays_dir = Path(DEMO_OUTPUT_DIR)
    rc = _cmd_predict(args)
    if args.overlays_dir:
        print(f"\nlesion overlays (red hemorrhage, yellow edema, blue infarct) written to {args.overlays_dir}/", file=say)
    return rc


def _cmd_train(args: argparse.Namespace) -> int:
    from strokescan.training.classifier import TrainConfig
    from strokescan.training.workflow import train_ctich_classifier

    cfg = TrainConfig(max_epochs=args.max_epochs, seed=args.seed)
    train_ctich_classifier(Path(args.run_dir), Path(args.out), cfg)
    print(f"model written to {args.out}; out-of-fold predictions in {args.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from strokescan.evaluation.classifier_eval import evaluate_classifier
    from strokescan.evaluation.report import markdown_summary

    figures = evaluate_classifier(args.model, Path(args.run_dir), Path(args.report), external=not args.no_external)
    print(markdown_summary(figures))
    print(f"\nreport written to {args.report}")
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

    def add_model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, help="classifier folder (default: the bundled model)")
        p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
        p.add_argument("--series", help="series index or SeriesInstanceUID when a folder holds several")
        p.add_argument("--masks-dir", type=Path, help="also segment lesions; write one PNG of class ids per slice "
                       "(0 background, 1 hemorrhage, 2 edema, 3 infarct) in the input's size, named <stem>.png or "
                       "<stem>_<slice_index>.png, and add mask paths, areas and volumes to the output")
        p.add_argument("--overlays-dir", type=Path, help="also segment lesions; write colour overlays for people "
                       "(red hemorrhage, yellow edema, blue infarct)")
        p.add_argument("--segmenter", type=Path, help="segmentation model folder (default: the bundled one)")

    p = sub.add_parser(
        "predict",
        help="probability of hemorrhage per slice and per scan",
        description="Analyse each PATH (image, DICOM file/folder/zip, NIfTI, or a folder of them). With --json: one "
        "object per slice (path, slice_index, probability, positive) and, for a multi-slice scan, one more with "
        '"scan": true. Inputs that cannot be read get an error line; the others are still analysed; the exit '
        "status is 2 if any input failed. Research and triage support, not a diagnosis.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_model_options(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="analyse the bundled sample slices (the README's first command)")
    add_model_options(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "train",
        help="train the slice classifier with 5-fold patient-grouped cross-validation",
        description="Train on ctich-kaggle (from $STROKESCAN_DATA or ../shared/data): caches preprocessed features "
        "under .cache/, runs the committed 5 patient-grouped folds (resumes finished folds from RUN_DIR), then "
        "trains the final model on all labelled slices and writes it with its plan (calibration, thresholds).",
    )
    p.add_argument("--run-dir", default="runs/classifier", help="folder for per-fold results (resumable)")
    p.add_argument("--out", default="runs/classifier/model", help="folder to write the final model to")
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=SEED)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="write the evaluation report (CV and external figures with 95% CIs, plots)",
        description="Cross-validated figures from RUN_DIR's out-of-fold predictions and external figures on "
        "phe-sich (never trained on) with the model's stored threshold; CIs from 1000 bootstrap resamples of patients.",
    )
    p.add_argument("--model", type=Path, help="classifier folder (default: the bundled model)")
    p.add_argument("--run-dir", default="runs/classifier")
    p.add_argument("--report", default="runs/classifier/report")
    p.add_argument("--no-external", action="store_true", help="skip the external phe-sich evaluation")
    p.set_defaults(func=_cmd_evaluate)
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
