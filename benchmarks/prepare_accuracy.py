"""How close the labels `cleanpose data prepare` recovers come to the synthetic ground truth.

Usage (from the repository root):
    OMP_NUM_THREADS=1 python -m benchmarks.prepare_accuracy [--scenes 4] [--frames 5] [--size 640x480]

Writes the same synthetic NOCS training frames twice with one seed, once with labels (the exact
rendering poses, `generate`) and once as raw downloads (`generate(raw=True)`), prepares the raw set
(CAMERA: RANSAC + Umeyama on the objects-only depth; REAL: PnP) and prints, per source, the median /
95th percentile / maximum of the rotation (degrees), translation (mm) and scale (%) errors, over all
instances and over unoccluded ones (mask not 4-adjacent to another instance, not touching the border).
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from cleanpose.data.formats import encoding, nocs
from cleanpose.data.prepare import prepare
from cleanpose.data.synth import generate
from cleanpose.data.synth.generate import split_intrinsics

SEED = 3
SPLITS = ("camera_train", "real_train")


def unoccluded(mask: np.ndarray, instance_id: int) -> bool:
    """No pixel of the instance touches another instance (4-neighbourhood) or the image border."""
    own = mask == instance_id
    grown = own.copy()
    grown[1:] |= own[:-1]
    grown[:-1] |= own[1:]
    grown[:, 1:] |= own[:, :-1]
    grown[:, :-1] |= own[:, 1:]
    rows, columns = np.where(own)
    height, width = mask.shape
    inside = rows.min() > 0 and columns.min() > 0 and rows.max() < height - 1 and columns.max() < width - 1
    return inside and not (grown & (mask != instance_id) & (mask != encoding.MASK_BACKGROUND_NOCS)).any()


def errors(truth: Path, out: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) [rotation °, translation mm, scale %] errors and (N,) unoccluded flags of every instance."""
    rows, flags = [], []
    for prefix in nocs.train_frames(out, source):
        expected, got = nocs.read_label(f"{truth}/{prefix}_label.pkl"), nocs.read_label(f"{out}/{prefix}_label.pkl")
        if expected.instance_ids.tolist() != got.instance_ids.tolist():
            raise AssertionError(f"{prefix}: instances differ: {expected.instance_ids} vs {got.instance_ids}")
        mask = encoding.read_mask(f"{out}/{prefix}_mask.png")
        for i, instance_id in enumerate(got.instance_ids):
            relative = expected.rotations[i].astype(np.float64).T @ got.rotations[i].astype(np.float64)
            angle = np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
            shift = 1000 * np.linalg.norm(expected.translations[i] - got.translations[i])
            rows.append([angle, shift, 100 * abs(got.scales[i] / expected.scales[i] - 1)])
            flags.append(unoccluded(mask, int(instance_id)))
    return np.array(rows), np.array(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        common = {
            "scenes": args.scenes,
            "frames_per_scene": args.frames,
            "seed": SEED,
            "splits": SPLITS,
            "image_size": size,
            "progress": False,
        }
        generate(base / "truth", **common)
        generate(base / "raw", raw=True, **common)
        intrinsics = {split.split("_")[0]: split_intrinsics("nocs", split, size, SEED, 0) for split in SPLITS}
        prepare(base / "raw", base / "out", splits=SPLITS, intrinsics=intrinsics, progress=False)
        report = {}
        for source in ("camera", "real"):
            values, flags = errors(base / "truth", base / "out", source)
            entry = {"instances": len(values), "unoccluded": int(flags.sum())}
            for subset, selected in (("all", np.ones(len(values), bool)), ("unoccluded", flags)):
                for column, name in enumerate(("rotation_deg", "translation_mm", "scale_pct")):
                    picked = values[selected, column]
                    entry[f"{subset}_{name}"] = {
                        "median": round(float(np.median(picked)), 4),
                        "p95": round(float(np.percentile(picked, 95)), 4),
                        "max": round(float(picked.max()), 4),
                    }
            report[source] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
