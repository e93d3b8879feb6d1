"""Write a synthetic NOCS set in the raw layout of the NOCS downloads (before any preprocessing).

What ``cleanpose data prepare`` reads (`docs/data_formats.md` §1, DPDN README layout)::

    CAMERA/{train,val}/<FFFFF>/<IIII>_{color,depth,mask,coord}.png, _meta.txt
    camera_full_depths/{train,val}/<FFFFF>/<IIII>_composed.png
    Real/{train,test}/scene_<k>/<IIII>_{color,depth,mask,coord}.png, _meta.txt
    obj_models/{train,val}/<synset>/<id>/model.obj, bbox.txt; obj_models/real_{train,test}/<name>.obj, .txt
    gts/{val,real_test}/results_*.pkl   (ground truth of the test frames: gt_* keys and image_path)

No labels, list files, point-model pickles, ``mug_meta.pkl`` or segmentation results: those are what
preparation produces (or, for segmentation results, a separate download). Frame images are the
same bytes `writer_nocs` writes for the same scene.
"""

from __future__ import annotations

from pathlib import Path

from cleanpose.data.formats import encoding
from cleanpose.data.synth import writer_nocs
from cleanpose.data.synth.scene import FrameArrays, Instance, SceneSpec

RAW_TOP_FOLDERS = {"camera": "CAMERA", "real": "Real"}
"""Top folder of each source as the downloads name it."""


def write_frame(
    root: Path, split: str, scene_index: int, frame_index: int, scene: SceneSpec, arrays: FrameArrays
) -> writer_nocs.FrameRecord:
    """Write the raw files of one frame (and its ``gts/`` pickle for a test split).

    Returns:
        `writer_nocs.FrameRecord` (``labelled`` is False: raw frames carry no label).
    """
    entry = writer_nocs.frame_entry(split, scene_index, frame_index)
    prefix = root / RAW_TOP_FOLDERS[split.split("_")[0]] / entry
    objects, instance_map, _ = writer_nocs.write_image_files(root, split, prefix, scene, arrays)
    if split in ("camera_val", "real_test"):
        ids = [i for i, k in enumerate(objects, start=1) if scene.objects[k].instance.class_id > 0]
        gt = writer_nocs.ground_truth(scene, arrays, [objects[i - 1] for i in ids], ids, instance_map)
        _, folder, frame = entry.split("/")
        set_name = "val" if split == "camera_val" else "real_test"
        gts_folder = root / "gts" / set_name
        gts_folder.mkdir(parents=True, exist_ok=True)
        top = split.split("_")[0]
        encoding.write_pickle_atomic(
            gts_folder / f"results_{set_name}_{folder}_{frame}.pkl", {"image_path": f"data/{top}/{entry}", **gt}
        )
    return writer_nocs.FrameRecord(split, entry, False, len(objects))


def write_models(root: Path, split: str, library: list[Instance]) -> int:
    """Write the raw meshes and size files of a split's library (`writer_nocs.write_mesh`); returns the count."""
    for instance in library:
        writer_nocs.write_mesh(root / "obj_models", split, instance)
    return len(library)
