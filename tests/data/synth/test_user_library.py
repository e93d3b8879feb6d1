"""Libraries of imported meshes, and a whole `generate --models` run re-derived from its files.

Oracles: the files written by the test (box corner, extents, unit), pinhole back-projection of the
written depth (labels within 2 mm of depth + float NOCS map), brute-force point-to-mesh distances
(the NOCS map and the model point clouds lie on the canonical mesh), brute-force Chamfer distances.
"""

import numpy as np
import pytest
import trimesh
import yaml

from cleanpose.data.formats import encoding
from cleanpose.data.synth import SensorNoise, generate, writer_nocs
from cleanpose.data.synth.generate import scene_frames
from cleanpose.data.synth.mesh_library import load_mesh, scan_models
from cleanpose.data.synth.scene import NOCS_SYNSETS
from cleanpose.data.synth.user_library import (
    MeshSettings,
    build_mixed_library,
    chamfer_medoid,
    mesh_settings,
    split_entries,
)
from cleanpose.errors import ConfigError
from cleanpose.geometry import backproject
from tests.data.synth.mesh_builders import write_coloured_box_ply, write_textured_box

SIZE = (160, 120)
SEED = 3
NOISE_OFF = SensorNoise(enabled=False)
EXTENTS_CM = np.array([6.0, 9.0, 5.0])


def _surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(M,) distance of each point to the nearest triangle, by brute force over all triangles."""
    triangles = np.repeat(mesh.triangles[None], len(points), axis=0).reshape(-1, 3, 3)
    repeated = np.repeat(points, len(mesh.triangles), axis=0)
    closest = trimesh.triangles.closest_point(triangles, repeated)
    return np.linalg.norm(closest - repeated, axis=1).reshape(len(points), -1).min(axis=1)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_textured_box(root / "files", "camera_box", [0.0, 0.0, 0.0], EXTENTS_CM)
    write_coloured_box_ply(root / "files" / "tin.ply", [0.1, 0.1, 0.1], [0.07, 0.12, 0.07])
    (root / "models.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"file": "files/camera_box.obj", "category": "camera", "unit": "cm", "name": "textured"},
                    {"file": "files/tin.ply", "category": "can"},
                ]
            }
        )
    )
    return root


def test_split_entries_hold_out_a_seeded_fraction(tmp_path):
    for index in range(5):
        write_textured_box(tmp_path / "mug", f"m{index}", [0, 0, 0], [1, 2, 3])
    catalog = scan_models(tmp_path, "nocs")
    entries = catalog.of_category("mug")
    train = split_entries(entries, 5, SEED, 0.4, test=False)
    test = split_entries(entries, 5, SEED, 0.4, test=True)
    assert len(test) == 2 and len(train) == 3 and set(train).isdisjoint(test) and set(train) | set(test) == set(entries)
    assert split_entries(entries, 5, SEED, 0.4, test=True) == test  # deterministic
    assert split_entries(entries, 5, SEED, 0.0, test=True) == entries
    settings = MeshSettings(catalog, 0.4, 0.5)
    library = build_mixed_library("nocs", "real_train", SEED, 2, settings)
    mugs = [instance for instance in library if instance.category == "mug"]
    assert [i.name for i in mugs if i.source] == [f"mug_{e.name}_norm" for e in train]
    assert sum(i.source is None for i in mugs) == 3  # half of the category's instances are procedural
    assert all(i.diagonal == pytest.approx(np.linalg.norm([1, 2, 3])) for i in mugs if i.source)
    assert {i.category for i in library if i.source is None} == {"bottle", "bowl", "camera", "can", "laptop", "mug"}
    assert sum(i.category == "bottle" for i in library) == 2  # categories without meshes: per_category procedural
    camera = build_mixed_library("nocs", "camera_val", SEED, 2, MeshSettings(catalog, 0.4, 0.0))
    assert [i.name for i in camera] == [f"mug_{e.name}" for e in test] and all(i.novel for i in camera)
    assert all(i.synset == "03797390" for i in camera)


def test_fraction_errors(tmp_path):
    write_textured_box(tmp_path / "mug", "only", [0, 0, 0], [1, 2, 3])
    settings = mesh_settings(tmp_path, "nocs", test_fraction=0.3)
    with pytest.raises(ConfigError, match=r"category mug has a single mesh .*only.obj.*--test-fraction 0"):
        build_mixed_library("nocs", "real_test", SEED, 1, settings)
    with pytest.raises(ConfigError, match=r"procedural_fraction must be in \[0, 1\); got 1.0"):
        mesh_settings(tmp_path, "nocs", procedural_fraction=1.0)
    with pytest.raises(ConfigError, match=r"test_fraction must be in \[0, 1\); got -0.1"):
        mesh_settings(tmp_path, "nocs", test_fraction=-0.1)


def test_chamfer_medoid_brute_force():
    generator = np.random.default_rng(0)
    clouds = [generator.normal(size=(30, 3)) + offset for offset in ([0, 0, 0], [0.3, 0, 0], [2, 0, 0], [0.5, 0, 0])]

    def chamfer(a, b):
        distance = np.linalg.norm(a[:, None] - b[None], axis=2)
        return distance.min(axis=1).mean() + distance.min(axis=0).mean()

    totals = [sum(chamfer(a, b) for b in clouds) for a in clouds]
    assert chamfer_medoid(clouds) == int(np.argmin(totals))


@pytest.fixture(scope="module")
def generated(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_models") / "data"
    settings = mesh_settings(models_dir, "nocs", test_fraction=0.0, procedural_fraction=0.5)
    generate(
        root,
        "nocs",
        scenes=2,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        noise=NOISE_OFF,
        splits=("camera_train", "real_train"),
        instances_per_category=1,
        objects_range=(5, 6),
        progress=False,
        meshes=settings,
    )
    return root, settings


@pytest.mark.parametrize("split", ["camera_train", "real_train"])
def test_labels_of_imported_meshes_match_depth_and_nocs(generated, split):
    root, settings = generated
    top = split.split("_")[0]
    checked = 0
    for scene_index in range(2):
        for scene, intrinsics, frame, arrays in scene_frames(
            "nocs", split, scene_index, 2, SEED, SIZE, NOISE_OFF, 1, (5, 6), settings
        ):
            prefix = root / top / writer_nocs.frame_entry(split, scene_index, frame)
            if not prefix.with_name(prefix.name + "_label.pkl").exists():
                continue
            label = encoding.read_pickle(f"{prefix}_label.pkl")
            depth_m = encoding.read_depth(f"{prefix}_depth.png").astype(np.float64) / 1000.0
            mask = encoding.read_mask(f"{prefix}_mask.png")
            visible = [k for k in range(len(scene.objects)) if (arrays.object_index == k).any()]
            for i, instance_id in enumerate(label["instance_ids"]):
                instance = scene.objects[visible[instance_id - 1]].instance
                if instance.source is None:
                    continue
                valid = (mask == instance_id) & (depth_m > 0)
                points = backproject(depth_m, intrinsics, valid).astype(np.float64)
                mapped = (
                    float(label["scales"][i]) * arrays.nocs[valid] @ label["rotations"][i].astype(np.float64).T
                    + label["translations"][i]
                )
                assert np.abs(mapped - points).max() < 0.002  # float NOCS, before 8-bit encoding
                # the NOCS map holds the canonicalised coordinates: points of the canonical mesh's surface
                canonical = load_mesh(instance.source).shape.mesh
                sample = arrays.nocs[valid][:: max(1, valid.sum() // 40)]
                assert _surface_distance(canonical, sample).max() < 1e-9
                np.testing.assert_allclose(label["sizes"][i], canonical.extents, atol=2e-6)
                assert label["model_list"][i] == instance.name
                if top == "real":
                    dims = np.loadtxt(root / "obj_models" / "real_train" / f"{instance.name}.txt")
                    np.testing.assert_allclose(dims, canonical.extents * load_mesh(instance.source).diagonal, atol=1e-8)
                checked += 1
    assert checked >= 2, checked


def test_imported_models_written_as_the_format_requires(generated):
    root, settings = generated
    camera_models = encoding.read_pickle(root / "obj_models" / "camera_train.pkl")
    real_models = encoding.read_pickle(root / "obj_models" / "real_train.pkl")
    for entry in settings.catalog.entries:
        canonical = load_mesh(entry).shape.mesh
        camera_name, real_name = f"{entry.category}_{entry.name}", f"{entry.category}_{entry.name}_norm"
        for points in (camera_models[camera_name], real_models[real_name]):
            assert points.shape == (1024, 3) and points.dtype == np.float64
            assert _surface_distance(canonical, points[::32]).max() < 1e-9
        folder = root / "obj_models" / "train" / NOCS_SYNSETS[entry.category] / camera_name
        bbox = np.loadtxt(folder / "bbox.txt")
        np.testing.assert_allclose(bbox[0] - bbox[1], canonical.extents, atol=2e-6)
    # the camera prior is the point model of one of the training cameras (imported box or procedural)
    priors = np.load(root / writer_nocs.MEAN_SHAPES_FILE)
    assert priors.shape == (6, 1024, 3)
    cameras = [
        writer_nocs.model_points(i, SEED)
        for split in ("camera_train", "real_train")
        for i in build_mixed_library("nocs", split, SEED, 1, settings)
        if i.category == "camera"
    ]
    assert len(cameras) == 4 and any(np.array_equal(priors[2], points) for points in cameras)


def test_housecat6d_models_are_metric(tmp_path):
    (tmp_path / "can").mkdir()
    write_coloured_box_ply(tmp_path / "can" / "tin.ply", [0, 0, 0], [0.07, 0.12, 0.07])
    settings = mesh_settings(tmp_path, "housecat6d", test_fraction=0.0)
    root = tmp_path / "hc"
    generate(
        root,
        "housecat6d",
        scenes=1,
        frames_per_scene=1,
        seed=SEED,
        image_size=(96, 75),
        noise=NOISE_OFF,
        splits=("train",),
        progress=False,
        meshes=settings,
    )
    vertices = np.array(
        [
            [float(v) for v in line.split()[1:4]]
            for line in (root / "obj_models_small_size_final" / "can" / "can-tin.obj").read_text().splitlines()
            if line.startswith("v ")
        ]
    )
    np.testing.assert_allclose(vertices.max(axis=0) - vertices.min(axis=0), [0.07, 0.12, 0.07], atol=2e-6)
    label = encoding.read_pickle(root / "scene01" / "labels" / "000000_label.pkl")
    meta = encoding.read_meta(root / "scene01" / "meta.txt")
    for row, scales in zip(meta, label["gt_scales"]):
        if row.model == "can-tin":
            np.testing.assert_allclose(scales, [0.07, 0.12, 0.07], atol=1e-6)
    assert "can-tin" in [row.model for row in meta]


def test_deterministic_across_workers_with_meshes_and_photos(models_dir, tmp_path):
    import cv2

    from cleanpose.data.synth.backgrounds import scan_backgrounds

    (tmp_path / "photos").mkdir()
    photo = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photos" / "p.png"), photo)
    settings = mesh_settings(models_dir, "nocs", test_fraction=0.0, procedural_fraction=0.3)
    kwargs = dict(
        format="nocs",
        scenes=1,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        instances_per_category=1,
        splits=("camera_train", "real_test"),
        progress=False,
        meshes=settings,
        backgrounds=scan_backgrounds(tmp_path / "photos"),
    )
    generate(tmp_path / "a", workers=1, **kwargs)
    generate(tmp_path / "b", workers=2, **kwargs)
    files = [
        {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
        for root in (tmp_path / "a", tmp_path / "b")
    ]
    assert files[0] == files[1] and any(name.name.endswith("_label.pkl") for name in files[0])
