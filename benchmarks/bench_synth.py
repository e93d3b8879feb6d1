"""Throughput of `cleanpose synth` (target: >= 5 frames/s on 2 cores at 640x480 with 4 objects).

Usage (from the repository root):
    OMP_NUM_THREADS=2 python -m benchmarks.bench_synth [--workers 2] [--frames 40] [--split camera_train]
        [--textured-faces 20000]

Reports, in one process, the per-frame time of rendering (scene sampling, ray casting, shading, sensor
noise) and of writing the files; then the wall-clock frames/s of a whole `generate` run with `--workers`
processes (worker start-up, models and list files included) and the frames/s that its CPU time per
frame gives on that many otherwise idle cores (the wall-clock figure drops when other jobs share the
cores: the load average is printed next to it).

``--textured-faces F`` renders imported meshes instead of the procedural shapes (``synth --models``):
four UV-textured spheres of about F faces each (bottle, bowl, can, mug; written by
`tests.data.synth.mesh_builders.write_textured_sphere`), every mesh in every split.
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.timing import Laps, cpu_seconds
from cleanpose.data.synth import SensorNoise, generate, writer_nocs
from cleanpose.data.synth.generate import scene_frames
from cleanpose.data.synth.mesh_library import load_mesh
from cleanpose.data.synth.user_library import MeshSettings, mesh_settings
from tests.data.synth.mesh_builders import write_textured_sphere


def textured_meshes(folder: Path, faces: int) -> MeshSettings:
    """Four textured spheres of about `faces` faces, one per category, as ``synth --models`` settings."""
    for category in ("bottle", "bowl", "can", "mug"):
        write_textured_sphere(folder / category, "sphere", faces)
    return mesh_settings(folder, "nocs", test_fraction=0.0)


def stage_times(split: str, frames: int, meshes: MeshSettings | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        laps = Laps()
        laps.start()
        iterator = scene_frames("nocs", split, 0, frames, 0, (640, 480), SensorNoise(), 1, (4, 4), meshes)
        for scene, _, frame, arrays in iterator:
            laps.lap("render")
            writer_nocs.write_frame(root, split, 0, frame, scene, arrays, np.random.default_rng(frame))
            laps.lap("write")
    print(
        f"one process, {frames} frames of {split}: render {sum(laps.times['render']) / frames:.0f} ms/frame, "
        f"write {sum(laps.times['write']) / frames:.0f} ms/frame"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=40, help="frames in total (10 per scene)")
    parser.add_argument("--split", default="camera_train", choices=writer_nocs.NOCS_SPLITS)
    parser.add_argument(
        "--textured-faces",
        type=int,
        default=0,
        help="render four imported textured meshes of about this many faces (0: procedural shapes)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as models:
        meshes = textured_meshes(Path(models), args.textured_faces) if args.textured_faces else None
        if meshes is not None:
            faces = [len(load_mesh(entry).shape.mesh.faces) for entry in meshes.catalog.entries]
            print(f"imported textured meshes with {faces} faces")
        stage_times(args.split, 6, meshes)
        cpu_start = cpu_seconds()
        with tempfile.TemporaryDirectory() as folder:
            summary = generate(
                Path(folder) / "data",
                "nocs",
                scenes=max(1, args.frames // 10),
                frames_per_scene=10,
                seed=0,
                workers=args.workers,
                splits=(args.split,),
                instances_per_category=2,
                objects_range=(4, 4),
                progress=False,
                meshes=meshes,
            )
    cpu_per_frame = (cpu_seconds() - cpu_start) / summary.frames
    print(
        f"{summary.frames} frames at 640x480, 4 objects, {args.workers} workers: {summary.seconds:.1f} s wall, "
        f"{summary.frames_per_second:.2f} frames/s (incl. process start-up and {summary.models} models); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"CPU time {1000 * cpu_per_frame:.0f} ms/frame over all processes -> "
        f"{args.workers / cpu_per_frame:.2f} frames/s on {args.workers} otherwise idle cores"
    )


if __name__ == "__main__":
    main()
