"""BLAST-CT (open 3-D TBI lesion segmenter) beside strokescan's segmenter on the same CT-ICH patients.

    nice -n 19 .venv/bin/python benchmarks/blast_ct_compare.py --run-dir RUN [--patients 75 71] [--max-volumes 1]
        [--slices 6] [--crop-head] [--device cpu|0] [--ensemble] [--blast-timeout-min 20]

Set up the peer environment first (outside the repo, never a strokescan dependency): benchmarks/blast_ct_setup.sh.
docs/blast-ct.md has the full procedure, the GPU variant and what was verified.

What it does, per patient (default: every ctich-masks patient with blood, fewest slices first):
1. rebuilds the patient as a volume: the ctich-kaggle JPEGs stacked in slice order (``slice_index`` of
   ``strokescan.datasets.local.load_ctich_kaggle``), 8-bit value v mapped back to HU = v/255*120 - 20 (the
   JPEGs' brain window, level 40 width 120), spacing 0.354 x 0.354 x 5 mm (5 mm: CT-ICH's stated slice
   thickness; 0.354 mm in-plane is an assumption: a 230 mm field of view over 650 px), written as NIfTI with a
   radiological affine (columns to the patient's left, rows to posterior, slices upward). ``--slices N`` keeps
   the N consecutive slices with the most reference blood; ``--crop-head`` crops the columns/rows to the brain's
   bounding box + a margin (fewer 3-D patches; the prediction is pasted back into the full frame);
2. runs BLAST-CT on it in its own venv as a subprocess (this file's ``blast-worker`` mode, which does what the
   ``blast-ct`` console tool does, with progress lines), one output per volume in RUN/<name>.nii.gz, skipped
   when present (resumable);
3. runs strokescan's ``Predictor(segment=True)`` on each JPEG of the same slices as ``strokescan predict``
   would (one scan per JPEG; hemorrhage = class id 1), cached in RUN/strokescan/<name>.npz;
4. prints, per patient and pooled, for both: Dice on the slices with reference blood (mean per slice), Dice
   over the volume, volume in mL vs the reference, and seconds per scan. BLAST-CT's "clot" = its classes
   1 intraparenchymal + 2 extra-axial + 4 intraventricular haemorrhage (3, perilesional oedema, is not clot).
   Reference: the ctich-masks clot masks turned onto the JPEGs (rot90 k=1, nearest resize to 650 x 650).

Run everything niced on a shared machine; the worker uses --threads torch threads (default 1).
Outputs hold CT-ICH-derived images: keep RUN out of any commit (runs/ is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("blast_ct_compare")

HU_LOW, HU_WIDTH = -20.0, 120.0  # the JPEGs' window: level 40, width 120 -> v/255*120 - 20
PIXEL_MM = 0.354  # assumed in-plane spacing (CT-ICH states none for the JPEGs): 230 mm field of view / 650 px
SLICE_MM = 5.0  # CT-ICH's README: "about 30 slices with 5 mm slice-thickness"
BLAST_CLOT_CLASSES = (1, 2, 4)  # BLAST-CT: 1 IPH, 2 extra-axial haemorrhage, 3 perilesional oedema, 4 IVH
BLAST_CLASS_NAMES = {1: "IPH", 2: "EAH", 3: "oedema", 4: "IVH"}
STROKESCAN_HEMORRHAGE = 1  # strokescan.core.labels.LesionClass.HEMORRHAGE
DEFAULT_BLAST_ENV = Path(os.environ.get("BLAST_ENV", "/work/blast-env"))
ENSEMBLE_SIZE = 12  # what `blast-ct --ensemble` uses


# ----------------------------------------------------------------------------------------------------------
# blast-worker: runs inside the BLAST-CT venv (imports blast_ct, never strokescan)
# ----------------------------------------------------------------------------------------------------------

def _sha256(path: str) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def blast_worker(argv: list[str]) -> int:
    """What ``blast-ct --input IN --output OUT [--ensemble] [--device D]`` does (blast_ct/console_tool.py of
    blast-ct 2.1.0: the package's config, test loader, NiftiPatchSaver and ModelInference[Ensemble]), plus: a
    private job folder (the console tool always uses /tmp/blast_ct and deletes it), a progress line per batch,
    no download (every model must already be in the cache), an atomic write and a JSON sidecar with timings."""
    ap = argparse.ArgumentParser(prog="blast_ct_compare.py blast-worker")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--device", default="cpu", help="'cpu' or a CUDA device index, as blast-ct's --device")
    ap.add_argument("--models", type=int, default=1, help="1 = model 1 (the tool's default); 12 = --ensemble")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="patches per forward pass (the tool uses 32; results do not depend on it: eval mode)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s blast-worker %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed on timeout: still remove the job folder

    import math

    import pandas as pd
    import torch

    torch.set_num_threads(max(1, args.threads))
    from blast_ct import assets
    from blast_ct.nifti.savers import NiftiPatchSaver
    from blast_ct.read_config import get_model, get_test_loader
    from blast_ct.train import set_device
    from blast_ct.trainer.inference import ModelInference, ModelInferenceEnsemble

    rels = [f"saved_models/model_{i}.torch_model" for i in range(1, args.models + 1)]
    found = [p for p in (os.path.join(d, r) for r in rels for d in (assets._package_data_dir(), assets._cache_root()))
             if os.path.exists(p)]
    missing = [r for r in rels if not any(p.endswith(r) for p in found)]
    if missing:
        log.error("not in the BLAST-CT cache %s: %s (no download here: see docs/blast-ct.md)",
                  assets._cache_root(), ", ".join(missing))
        return 3
    model_paths = [assets.get_model_path(i) for i in range(1, args.models + 1)]  # found: no download

    with open(assets.get_config_path()) as f:
        config = json.load(f)
    device = set_device(args.device)
    if device.type == "cpu":
        config["test"]["batch_size"] = 32  # as the console tool
    if args.batch_size:
        config["test"]["batch_size"] = args.batch_size
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    job_dir = tempfile.mkdtemp(prefix="blast_ct_job_", dir=str(out.parent))
    try:
        test_csv = os.path.join(job_dir, "test.csv")
        pd.DataFrame(data=[["im_0", os.path.abspath(args.input)]], columns=["id", "image"]).to_csv(test_csv,
                                                                                                   index=False)
        t0 = time.perf_counter()
        model = get_model(config)
        loader = get_test_loader(config, model, test_csv, use_cuda=device.type != "cpu")
        n_patches = len(loader.dataset)
        batch = config["test"]["batch_size"]
        n_batches = math.ceil(n_patches / batch)
        target_shape, _ = loader.dataset.image_mapping[0]
        log.info("input %s: %s voxels at 1 mm after resampling -> %d patches of 110^3 (30^3 out), %d batches of %d;"
                 " device %s, %d model(s), %d thread(s)", args.input, "x".join(map(str, target_shape)), n_patches,
                 n_batches, batch, device, len(model_paths), torch.get_num_threads())
        saver = NiftiPatchSaver(job_dir, loader, write_prob_maps=False, do_localisation=False)

        class Progress:
            def __iter__(self):
                start = time.perf_counter()
                for i, inputs in enumerate(loader, 1):
                    yield inputs
                    done = min(i * batch, n_patches)
                    el = time.perf_counter() - start
                    log.info("progress batch %d/%d patches %d/%d elapsed %.0f s eta %.0f s", i, n_batches, done,
                             n_patches, el, el / done * (n_patches - done))

        if len(model_paths) == 1:
            ModelInference(job_dir, device, model, saver, model_paths[0], "segmentation")(Progress())
        else:
            ModelInferenceEnsemble(job_dir, device, model, saver, model_paths, task="segmentation")(Progress())
        seconds = time.perf_counter() - t0
        pred_csv = pd.read_csv(os.path.join(job_dir, "predictions", "prediction.csv"))
        pred_path = pred_csv.loc[0, "prediction"]
        if not os.path.exists(pred_path):
            log.error("BLAST-CT wrote no prediction (its saver swallows errors): %s", pred_path)
            return 4
        partial = out.with_name(out.name + ".partial.nii.gz")
        shutil.copyfile(pred_path, partial)
        from importlib.metadata import version

        import blast_ct
        side = {
            "input": os.path.abspath(args.input), "output": str(out), "seconds": seconds, "device": str(device),
            "threads": torch.get_num_threads(), "n_patches": n_patches, "batch_size": batch,
            "models": [{"path": p, "sha256": _sha256(p)} for p in model_paths],
            "blast_ct": version("blast-ct"), "blast_ct_module": os.path.dirname(blast_ct.__file__),
            "torch": torch.__version__,
            "predicted_volume_ml": {c: float(pred_csv.loc[0, c]) for c in pred_csv.columns if c.endswith("_ml")},
        }
        with open(sidecar_path(out), "w") as f:
            json.dump(side, f, indent=1)
        os.replace(partial, out)  # the output appears only when complete: a killed run leaves nothing to skip
        log.info("done in %.0f s: %s", seconds, out)
        return 0
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name.replace(".nii.gz", "") + ".blast.json")


# ----------------------------------------------------------------------------------------------------------
# orchestrator: runs in strokescan's venv
# ----------------------------------------------------------------------------------------------------------

def patient_tables(data_root: str | None):
    """(slices, masks): ctich-kaggle rows with slice_index, ctich-masks rows keyed by image_path."""
    from strokescan.datasets.local import load_ctich_kaggle, load_ctich_masks
    slices = load_ctich_kaggle(data_root)
    masks = load_ctich_masks(data_root)
    return slices, masks.set_index("image_path")


def reference_mask(mask_path: str, shape):
    """The ctich-masks clot mask on the JPEG grid, as its PROVENANCE.md says: > 127, numpy.rot90 k=1, nearest
    resize to ``shape`` (what strokescan.datasets.lesion_masks does for training)."""
    import cv2
    import numpy as np
    from PIL import Image
    with Image.open(mask_path) as im:
        a = np.asarray(im)
    g = (a if a.ndim == 2 else a[..., :3].max(axis=-1)) > 127
    g = np.ascontiguousarray(np.rot90(g, k=1)).astype(np.uint8)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def build_case(patient: str, slices, masks, n_slices: int | None, crop_head: bool, margin_px: int,
               pixel_mm: float, slice_mm: float) -> dict:
    """Pixels (HU), reference masks and geometry of one patient's volume (possibly cropped)."""
    import numpy as np

    from strokescan.io.images import read_image
    from strokescan.preprocessing.masking import head_masks

    rows = slices[slices["source_patient"] == patient]
    if rows.empty:
        raise ValueError(f"patient {patient}: not in ctich-kaggle")
    if rows["slice_index"].isna().any():
        raise ValueError(f"patient {patient}: slice order unresolved in ctich-kaggle (no slice_index)")
    rows = rows.sort_values("slice_index")
    paths = list(rows["image_path"])
    index = [int(s) for s in rows["slice_index"]]
    pixels = np.stack([read_image(Path(p)).pixels[0] for p in paths])  # (n, rows, cols) 8-bit values
    shape = pixels.shape[1:]
    has_ref = np.array([p in masks.index for p in paths])
    ref = np.zeros(pixels.shape, bool)
    for i, p in enumerate(paths):
        if has_ref[i]:
            ref[i] = reference_mask(masks.loc[p, "mask_path"], shape)
    z0, z1 = 0, len(paths)
    if n_slices and n_slices < len(paths):
        blood = ref.reshape(len(paths), -1).sum(1)
        sums = [blood[i:i + n_slices].sum() for i in range(len(paths) - n_slices + 1)]
        z0 = int(np.argmax(sums))
        z1 = z0 + n_slices
    r0, r1, c0, c1 = 0, shape[0], 0, shape[1]
    if crop_head:
        brain = np.zeros(shape, bool)
        head = np.zeros(shape, bool)
        for px in pixels[z0:z1]:
            m = head_masks(px, False)
            brain |= m.brain
            head |= m.head
        keep = brain if brain.any() else head
        if keep.any():
            rr, cc = np.flatnonzero(keep.any(1)), np.flatnonzero(keep.any(0))
            r0, r1 = max(0, rr[0] - margin_px), min(shape[0], rr[-1] + 1 + margin_px)
            c0, c1 = max(0, cc[0] - margin_px), min(shape[1], cc[-1] + 1 + margin_px)
    name = patient + (f"_z{index[z0]}-{index[z1 - 1]}" if (z0, z1) != (0, len(paths)) else "") + \
        (f"_crop{r0}-{r1}x{c0}-{c1}" if (r0, r1, c0, c1) != (0, shape[0], 0, shape[1]) else "")
    return {
        "patient": patient, "name": name, "paths": paths[z0:z1], "slice_index": index[z0:z1],
        "pixels": pixels[z0:z1], "ref": ref[z0:z1], "has_ref": has_ref[z0:z1], "shape": shape,
        "z": (z0, z1), "box": (r0, r1, c0, c1), "n_slices_patient": len(paths),
        "spacing_mm": (pixel_mm, pixel_mm, slice_mm),
    }


def affine_for(case: dict):
    """Voxel (i = column, j = row, k = slice) -> RAS mm: columns run to the patient's left (-x), rows to
    posterior (-y), slices upward (+z; CT-ICH numbers slices inferior to superior). The origin places the
    uncropped frame's first voxel at 0, so crops keep their place."""
    import numpy as np
    sx, sy, sz = case["spacing_mm"]
    r0, _, c0, _ = case["box"]
    a = np.diag([-sx, -sy, sz, 1.0])
    a[:3, 3] = [-sx * c0, -sy * r0, sz * case["z"][0]]
    return a


def write_input(case: dict, path: Path) -> None:
    import nibabel as nib
    import numpy as np
    r0, r1, c0, c1 = case["box"]
    hu = case["pixels"][:, r0:r1, c0:c1].astype(np.float32) / 255.0 * HU_WIDTH + HU_LOW
    img = nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), affine_for(case))
    img.set_qform(affine_for(case), code=1)
    img.set_sform(affine_for(case), code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.nii.gz")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def read_blast_output(case: dict, path: Path):
    """BLAST-CT's labels (n, rows, cols) on the full JPEG frame (zero outside a crop)."""
    import nibabel as nib
    import numpy as np
    img = nib.load(str(path))
    r0, r1, c0, c1 = case["box"]
    n = len(case["paths"])
    if img.shape[:3] != (c1 - c0, r1 - r0, n):
        raise ValueError(f"{path}: shape {img.shape} is not the input's {(c1 - c0, r1 - r0, n)}")
    if not np.allclose(img.affine, affine_for(case), atol=1e-3):
        raise ValueError(f"{path}: affine differs from the input's:\n{img.affine}")
    labels = np.rint(np.asanyarray(img.dataobj)).astype(np.uint8).transpose(2, 1, 0)
    full = np.zeros((n, *case["shape"]), np.uint8)
    full[:, r0:r1, c0:c1] = labels
    return full


class Strokescan:
    """strokescan's segmenter as the CLI runs it on JPEGs: one scan per file, load_scan + Predictor.analyse."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._predictor = None

    @property
    def predictor(self):
        if self._predictor is None:
            from strokescan.inference import Predictor
            self._predictor = Predictor(segment=True, threads=self.threads)
            self._warm = False
        return self._predictor

    def model_key(self) -> str:
        info = self.predictor.model_info
        return (f"{info.get('classifier_sha256')}/{info.get('segmenter_sha256')}/"
                f"{info.get('segmenter_clot_decision')}/{info.get('strokescan')}")

    def run(self, case: dict, cache: Path) -> tuple:
        import numpy as np

        from strokescan.errors import StrokescanError
        from strokescan.io import load_scan

        key = self.model_key()
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            if str(z["model"]) == key and list(z["paths"]) == case["paths"]:
                return z["masks"], z["seconds"], [str(e) for e in z["errors"] if str(e)]
            log.info("strokescan cache %s is for another model or slices: recomputing", cache)
        p = self.predictor
        if not self._warm:  # first call pays lazy set-up; not counted
            p.analyse(load_scan(case["paths"][0]))
            self._warm = True
        masks, seconds, errors = [], [], []
        for path in case["paths"]:
            t0 = time.perf_counter()
            try:
                result = p.analyse(load_scan(path))
                m = result.masks[0]
                err = ""
            except StrokescanError as exc:  # the CLI would print an error line for this input: no lesion
                m, err = np.zeros(case["shape"], np.uint8), f"{path}: {exc}"
            seconds.append(time.perf_counter() - t0)
            masks.append(m)
            errors.append(err)
        masks_a, seconds_a = np.stack(masks).astype(np.uint8), np.array(seconds)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".partial.npz")
        np.savez_compressed(tmp, masks=masks_a, seconds=seconds_a, model=key, paths=np.array(case["paths"]),
                            errors=np.array(errors))
        os.replace(tmp, cache)
        return masks_a, seconds_a, [e for e in errors if e]


def metrics(pred, ref, has_ref, voxel_ml: float) -> dict:
    """Dice per blood slice (mean), Dice over the volume and volumes, on the slices that have a reference mask."""
    import numpy as np
    p, r = pred[has_ref], ref[has_ref]
    blood = r.reshape(len(r), -1).any(1)
    inter = (p & r).reshape(len(r), -1).sum(1)
    ps, rs = p.reshape(len(p), -1).sum(1), r.reshape(len(r), -1).sum(1)
    per_slice = [2 * i / (a + b) for i, a, b in zip(inter[blood], ps[blood], rs[blood])]
    tot = ps.sum() + rs.sum()
    return {
        "n_slices": int(has_ref.sum()), "n_blood_slices": int(blood.sum()),
        "dice_blood_slices": float(np.mean(per_slice)) if per_slice else None, "per_slice_dice": per_slice,
        "dice_volume": float(2 * inter.sum() / tot) if tot else None,
        "intersection_px": int(inter.sum()), "pred_px": int(ps.sum()), "ref_px": int(rs.sum()),
        "pred_ml": float(ps.sum() * voxel_ml), "ref_ml": float(rs.sum() * voxel_ml),
        "fp_slices": int(((ps > 0) & ~blood).sum()), "missed_blood_slices": int(((ps == 0) & blood).sum()),
    }


def pooled(rows: list[dict]) -> dict:
    import numpy as np
    if not rows:
        return {}
    per_slice = [d for r in rows for d in r["per_slice_dice"]]
    inter, ps, rs = (sum(r[k] for r in rows) for k in ("intersection_px", "pred_px", "ref_px"))
    vols = [r["dice_volume"] for r in rows if r["dice_volume"] is not None]
    return {
        "n_patients": len(rows), "n_blood_slices": len(per_slice),
        "dice_blood_slices": float(np.mean(per_slice)) if per_slice else None,
        "dice_volume_mean": float(np.mean(vols)) if vols else None,
        "dice_volume_global": float(2 * inter / (ps + rs)) if ps + rs else None,
        "pred_ml": float(sum(r["pred_ml"] for r in rows)), "ref_ml": float(sum(r["ref_ml"] for r in rows)),
        "mean_abs_ml_error": float(np.mean([abs(r["pred_ml"] - r["ref_ml"]) for r in rows])),
        "seconds_per_scan": float(np.mean([r["seconds"] for r in rows])),
    }


def run_blast(case: dict, inp: Path, out: Path, args, logs: Path) -> dict:
    """One BLAST-CT subprocess in its own venv; returns {'status': done|failed|timeout, ...}."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "BLAST_CT_CACHE_DIR": str(args.blast_cache)}
    if args.blast_tool == "cli":  # the stock console tool (fixed /tmp/blast_ct job dir: never two at once)
        cmd = [str(Path(args.blast_python).parent / "blast-ct"), "--input", str(inp), "--output", str(out),
               "--device", args.device] + (["--ensemble"] if args.ensemble else [])
    else:
        cmd = [str(args.blast_python), str(Path(__file__).resolve()), "blast-worker", "--input", str(inp),
               "--output", str(out), "--device", args.device, "--threads", str(args.threads),
               "--models", str(ENSEMBLE_SIZE if args.ensemble else 1)]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{case['name']}.log"
    log.info("BLAST-CT on %s (%d slices): %s  [log %s]", case["name"], len(case["paths"]), " ".join(cmd), log_path)
    t0 = time.perf_counter()
    last = {"progress": "", "line": ""}
    with open(log_path, "a") as lf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

        def pump():
            assert proc.stdout is not None
            for line in proc.stdout:
                lf.write(line)
                lf.flush()
                line = line.rstrip()
                if line:
                    last["line"] = line
                    if "progress batch" in line:
                        last["progress"] = line
                    log.info("  | %s", line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timeout = args.blast_timeout_min * 60 if args.blast_timeout_min else None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the worker and its data-loader process, by our child's group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
            el = time.perf_counter() - t0
            note = {"status": "timeout", "seconds": el, "last_progress": last["progress"],
                    "last_line": last["line"], "timeout_min": args.blast_timeout_min}
            (out.parent / f"{case['name']}.timeout.json").write_text(json.dumps(note, indent=1))
            log.warning("BLAST-CT killed after %.0f s on %s; last progress: %s", el, case["name"],
                        last["progress"] or "(none)")
            return note
        reader.join(timeout=5)
    el = time.perf_counter() - t0
    if rc != 0 or not out.exists():
        log.error("BLAST-CT failed on %s (exit %s); see %s", case["name"], rc, log_path)
        return {"status": "failed", "rc": rc, "seconds": el, "last_progress": last["progress"],
                "last_line": last["line"]}
    if not sidecar_path(out).exists():  # stock console tool: no sidecar; wall time of the process instead
        sidecar_path(out).write_text(json.dumps({"seconds": el, "tool": "blast-ct console tool",
                                                 "device": args.device, "ensemble": args.ensemble}, indent=1))
    return {"status": "done", "seconds": el}


def fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: list[dict], pool: dict, header: str) -> None:
    print()
    print(header)
    w = max([len(r["name"]) for r in results] + [22]) + 2
    cols = f"{'patient':<{w}}{'method':<18}{'slices':>7}{'blood':>6}{'Dice/slice':>11}{'Dice vol':>9}" \
           f"{'mL pred':>9}{'mL ref':>8}{'FP sl':>6}{'miss sl':>8}{'s/scan':>9}"
    print(cols)
    print("-" * len(cols))
    for r in results:
        for m in ("blast_ct", "strokescan"):
            d = r.get(m)
            if d is None:
                print(f"{r['name']:<{w}}{r['labels'][m]:<18}  {r.get('blast_status', 'pending')}")
                continue
            print(f"{r['name']:<{w}}{r['labels'][m]:<18}{d['n_slices']:>7}{d['n_blood_slices']:>6}"
                  f"{fmt(d['dice_blood_slices']):>11}{fmt(d['dice_volume']):>9}{d['pred_ml']:>9.2f}{d['ref_ml']:>8.2f}"
                  f"{d['fp_slices']:>6}{d['missed_blood_slices']:>8}{d['seconds']:>9.1f}")
    for m, p in pool.items():
        if p:
            print(f"{'POOLED n=' + str(p['n_patients']) + ' patient(s)':<{w}}{m:<18}{'':>7}{p['n_blood_slices']:>6}"
                  f"{fmt(p['dice_blood_slices']):>11}{fmt(p['dice_volume_mean']):>9}{p['pred_ml']:>9.2f}"
                  f"{p['ref_ml']:>8.2f}{'':>6}{'':>8}{p['seconds_per_scan']:>9.1f}"
                  f"   (global volume Dice {fmt(p['dice_volume_global'])}, mean |mL error| "
                  f"{p['mean_abs_ml_error']:.2f})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["blast-worker"]:
        return blast_worker(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path(os.environ.get("STROKESCAN_RUNS", "runs")) / "blast_ct",
                    help="one BLAST-CT output per volume, inputs/, logs/, strokescan/ caches, results.json "
                         "(default $STROKESCAN_RUNS/blast_ct, else runs/blast_ct)")
    ap.add_argument("--data-root", help="shared data folder (default: strokescan's data_root())")
    ap.add_argument("--patients", nargs="+", help="CT-ICH patient numbers (e.g. 75 71; 'ctich-kaggle:75' works too);"
                    " default: every ctich-masks patient with blood, fewest slices first")
    ap.add_argument("--max-volumes", type=int, default=None,
                    help="run BLAST-CT on at most this many volumes that have no output yet (others are skipped)")
    ap.add_argument("--slices", type=int, default=None,
                    help="keep only the N consecutive slices with the most reference blood (a crop, to save time)")
    ap.add_argument("--crop-head", action="store_true",
                    help="crop rows/columns to the brain's bounding box + --crop-margin-px for BLAST-CT")
    ap.add_argument("--crop-margin-px", type=int, default=40)
    ap.add_argument("--pixel-mm", type=float, default=PIXEL_MM, help="in-plane spacing written to the NIfTI")
    ap.add_argument("--slice-mm", type=float, default=SLICE_MM, help="slice spacing written to the NIfTI")
    ap.add_argument("--blast-python", type=Path, default=DEFAULT_BLAST_ENV / "bin" / "python",
                    help="python of the BLAST-CT venv (benchmarks/blast_ct_setup.sh)")
    ap.add_argument("--blast-cache", type=Path,
                    default=Path(os.environ.get("BLAST_CT_CACHE_DIR", DEFAULT_BLAST_ENV / "cache")),
                    help="BLAST_CT_CACHE_DIR holding saved_models/model_<i>.torch_model")
    ap.add_argument("--blast-tool", choices=("worker", "cli"), default="worker",
                    help="worker: this file's blast-worker mode (progress lines, private job dir); "
                         "cli: the stock blast-ct console tool")
    ap.add_argument("--device", default="cpu", help="BLAST-CT device: cpu or a CUDA index (0)")
    ap.add_argument("--ensemble", action="store_true", help="BLAST-CT's 12-model ensemble (models 2-12 must be "
                    "in the cache; the shared peer folder has model 1 only)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="BLAST-CT patches per forward pass (worker only; the tool's 32 when not given)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both models")
    ap.add_argument("--blast-timeout-min", type=float, default=None,
                    help="kill a BLAST-CT run after this many minutes (recorded with its last progress line)")
    ap.add_argument("--no-blast", action="store_true", help="run no BLAST-CT: evaluate the outputs already there")
    ap.add_argument("--build-only", action="store_true", help="only write the input volumes (e.g. for a GPU box)")
    args = ap.parse_args(argv)

    args.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(args.run_dir / "compare.log")])
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)

    slices, masks = patient_tables(args.data_root)
    if args.patients:
        patients = [p.split(":")[-1] for p in args.patients]
    else:
        blood = masks[masks["hemorrhage"] == 1]["source_patient"].unique()
        counts = slices.groupby("source_patient").size()
        patients = sorted(blood, key=lambda p: (counts.get(p, 0), int(p)))
    voxel_ml = args.pixel_mm * args.pixel_mm * args.slice_mm / 1000.0
    blast_label = f"BLAST-CT {'ens12' if args.ensemble else 'model1'}"
    ss = Strokescan(args.threads)
    results, started = [], 0
    log.info("patients: %s; run dir %s; assumed voxel %.3f x %.3f x %.1f mm", " ".join(patients), args.run_dir,
             args.pixel_mm, args.pixel_mm, args.slice_mm)
    if not args.no_blast and not args.build_only and not Path(args.blast_python).exists():
        log.error("no BLAST-CT venv at %s: run benchmarks/blast_ct_setup.sh (or pass --blast-python)",
                  args.blast_python)
        return 2
    for k, patient in enumerate(patients, 1):
        try:
            case = build_case(patient, slices, masks, args.slices, args.crop_head, args.crop_margin_px,
                              args.pixel_mm, args.slice_mm)
        except ValueError as exc:
            log.warning("skipped: %s", exc)
            continue
        name = case["name"]
        inp = args.run_dir / "inputs" / f"{name}.nii.gz"
        out = args.run_dir / f"{name}.nii.gz"
        if not inp.exists():
            write_input(case, inp)
        r0, r1, c0, c1 = case["box"]
        log.info("[%d/%d] %s: slices %d-%d of %d, rows %d-%d, cols %d-%d, input %s", k, len(patients), name,
                 case["slice_index"][0], case["slice_index"][-1], case["n_slices_patient"], r0, r1, c0, c1, inp)
        if args.build_only:
            continue
        row = {"patient": patient, "name": name, "slice_index": case["slice_index"], "box": case["box"],
               "labels": {"blast_ct": blast_label, "strokescan": "strokescan"}}
        if out.exists():
            log.info("BLAST-CT output present, skipped: %s", out)
            row["blast_status"] = "done (earlier run)"
        elif args.no_blast:
            row["blast_status"] = "pending"
        elif args.max_volumes is not None and started >= args.max_volumes:
            row["blast_status"] = "pending (--max-volumes)"
        else:
            started += 1
            row["blast_status"] = run_blast(case, inp, out, args, args.run_dir / "logs")["status"]
        if out.exists():
            labels = read_blast_output(case, out)
            side = json.loads(sidecar_path(out).read_text()) if sidecar_path(out).exists() else {}
            clot = np.isin(labels, BLAST_CLOT_CLASSES)
            d = metrics(clot, case["ref"], case["has_ref"], voxel_ml)
            d["seconds"] = float(side.get("seconds", float("nan")))
            d["class_voxels"] = {BLAST_CLASS_NAMES[c]: int((labels == c).sum()) for c in BLAST_CLASS_NAMES}
            d["run"] = {k2: side.get(k2) for k2 in ("device", "threads", "n_patches", "batch_size", "blast_ct",
                                                    "torch")}
            row["blast_ct"] = d
            s_masks, s_seconds, errors = ss.run(case, args.run_dir / "strokescan" / f"{name}.npz")
            d2 = metrics(s_masks == STROKESCAN_HEMORRHAGE, case["ref"], case["has_ref"], voxel_ml)
            d2["seconds"] = float(s_seconds.sum())
            d2["seconds_per_slice"] = float(s_seconds.mean())
            d2["errors"] = errors
            row["strokescan"] = d2
            log.info("%s: BLAST-CT Dice vol %s / strokescan %s", name, fmt(d["dice_volume"]), fmt(d2["dice_volume"]))
        results.append(row)

    if args.build_only:
        return 0
    done = [r for r in results if "blast_ct" in r]
    pool = {blast_label: pooled([r["blast_ct"] for r in done]), "strokescan": pooled([r["strokescan"] for r in done])}
    header = (f"BLAST-CT ({blast_label}, device {args.device}) vs strokescan segmenter on CT-ICH (ctich-kaggle JPEGs "
              f"rebuilt as volumes; reference ctich-masks). Clot = BLAST-CT classes 1+2+4, strokescan class 1. "
              f"Voxel {args.pixel_mm} x {args.pixel_mm} x {args.slice_mm} mm (in-plane assumed). "
              f"Dice/slice = mean over slices with reference blood; pooled on the {len(done)} patient(s) with "
              f"both outputs.")
    print_table(results, pool, header)
    summary = {"header": header, "args": {k: str(v) for k, v in vars(args).items()}, "patients": results,
               "pooled": pool, "clot_classes_blast_ct": list(BLAST_CLOT_CLASSES)}
    (args.run_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    log.info("results: %s", args.run_dir / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
