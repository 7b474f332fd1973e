"""A strokescan DICOM SEG read back with highdicom and drawn over its source CT slice (the slice with the most
lesion pixels), the picture in docs/integration.md:

    .venv/bin/python scripts/seg_picture.py SERIES_FOLDER OUT.png
    .venv/bin/python scripts/seg_picture.py ../shared/data/head-ct-dicom/ge-hispeed-dual_gantry-tilt docs/screenshots/seg_over_source.png
"""
import sys
from pathlib import Path
import highdicom as hd, numpy as np, pydicom
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from strokescan.app.integration.dicom_results import build_segmentation, ordered_sources
from strokescan.core.windows import apply_window
from strokescan.inference import Predictor
from strokescan.io import load_scan
src = Path(sys.argv[1]); out = Path(sys.argv[2])
scan = load_scan(src)
result = Predictor(segment=True).analyse(scan)
datasets = [pydicom.dcmread(p, force=True) for p in sorted(src.glob("*.dcm"))]
sources = ordered_sources(scan, datasets)
seg = hd.seg.Segmentation.from_dataset(build_segmentation(scan, sources, result))
best = int(np.argmax([(m > 0).sum() for m in result.masks]))
uid = sources[best].SOPInstanceUID
labels = {d.segment_number: d.segment_label for d in seg.SegmentSequence}
arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=list(labels), assert_missing_frames_are_empty=True)[0]
ds = datasets[[str(d.SOPInstanceUID) for d in datasets].index(str(uid))]
hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(apply_window(hu, "brain"), cmap="gray")
colours = {"hemorrhage": (1, 0, 0), "edema": (1, 0.85, 0), "infarct": (0.2, 0.4, 1)}
for k, name in labels.items():
    m = arr[..., list(labels).index(k)] > 0
    if m.any():
        rgba = np.zeros((*m.shape, 4)); rgba[m] = (*colours[name], 0.45); ax.imshow(rgba)
        ax.contour(m, levels=[0.5], colors=[colours[name]], linewidths=1)
ax.set_title(f"strokescan DICOM SEG, read back with highdicom, over source slice {best + 1}\n({src.name}; segments: {', '.join(labels.values())})", fontsize=9)
ax.axis("off"); fig.tight_layout(); fig.savefig(out, dpi=110)
print("wrote", out, {labels[k]: int((arr[..., i] > 0).sum()) for i, k in enumerate(labels)})
