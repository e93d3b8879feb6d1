"""End-to-end checks of `generate`: every written instance is re-derived from the files on disk.

Oracles: the float NOCS map and poses of the deterministic re-rendering (`scene_frames`), the
pinhole back-projection of `cleanpose.geometry`, and the bounding boxes of the written OBJ files.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from cleanpose.data.formats import encoding
from cleanpose.data.synth import SensorNoise, generate, writer_nocs
from cleanpose.data.synth.generate import MARKER_FILE, scene_frames, split_intrinsics
from cleanpose.errors import ConfigError, OutputError
from cleanpose.geometry import backproject

SIZE = (160, 120)
SEED = 5
NOISE_OFF = SensorNoise(enabled=False)
SPLITS = ("camera_train", "camera_val", "real_train", "real_test")


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def nocs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = generate(
        root,
        "nocs",
        scenes=2,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        noise=NOISE_OFF,
        instances_per_category=1,
        progress=False,
    )
    assert summary.frames == 16 and summary.scenes == 8
    return root


def _obj_extents(path: Path) -> np.ndarray:
    vertices = np.array(
        [[float(v) for v in line.split()[1:4]] for line in path.read_text().splitlines() if line.startswith("v ")]
    )
    return vertices.max(axis=0) - vertices.min(axis=0)


def _frames(split):
    for scene_index in range(2):
        for scene, intrinsics, frame, arrays in scene_frames("nocs", split, scene_index, 2, SEED, SIZE, NOISE_OFF, 1):
            yield scene_index, scene, intrinsics, frame, arrays


@pytest.mark.parametrize("split", ["camera_train", "real_train"])
def test_labels_match_depth_nocs_and_meshes(nocs_root, split):
    top, sub = split.split("_")
    listed = (nocs_root / top / "train_list.txt").read_text().split()
    checked = 0
    for scene_index, scene, intrinsics, frame, arrays in _frames(split):
        entry = writer_nocs.frame_entry(split, scene_index, frame)
        prefix = nocs_root / top / entry
        label_path = Path(f"{prefix}_label.pkl")
        assert label_path.exists() == (entry in listed)
        if not label_path.exists():
            continue
        label = encoding.read_pickle(label_path)
        assert set(label) == {
            "class_ids",
            "instance_ids",
            "model_list",
            "bboxes",
            "scales",
            "sizes",
            "rotations",
            "translations",
        }
        assert label["bboxes"].dtype == np.int32 and label["rotations"].dtype == np.float32
        depth_m = encoding.read_depth(f"{prefix}_depth.png").astype(np.float64) / 1000.0
        mask = encoding.read_mask(f"{prefix}_mask.png")
        coord = encoding.read_coord(f"{prefix}_coord.png")
        meta = encoding.read_meta(f"{prefix}_meta.txt")
        # the oracle: which scene object carries each instance id (meta lists visible objects in scene order)
        visible = [k for k in range(len(scene.objects)) if (arrays.object_index == k).any()]
        assert [row.instance_id for row in meta] == list(range(1, len(visible) + 1))
        kept_rows = [row for row in meta if row.class_id > 0]
        assert set(label["instance_ids"]) <= {row.instance_id for row in kept_rows}
        assert list(label["class_ids"]) == [meta[i - 1].class_id for i in label["instance_ids"]]
        for i, instance_id in enumerate(label["instance_ids"]):
            k = visible[instance_id - 1]
            instance_mask = mask == instance_id
            rows, columns = np.nonzero(instance_mask)
            box = label["bboxes"][i]
            assert tuple(box) == (rows.min(), columns.min(), rows.max() + 1, columns.max() + 1)
            valid = instance_mask & (depth_m > 0)
            assert valid.sum() >= 64
            points = backproject(depth_m, intrinsics, valid).astype(np.float64)
            rotation = label["rotations"][i].astype(np.float64)
            translation = label["translations"][i].astype(np.float64)
            scale = float(label["scales"][i])
            mapped = scale * arrays.nocs[valid] @ rotation.T + translation
            assert np.abs(mapped - points).max() < 0.002  # float NOCS, before 8-bit encoding
            q_from_depth = (points - translation) @ rotation / scale
            decoded = coord[valid].astype(np.float64) - 0.5
            bound = 1.0 / 510 + 0.002 / scale + 1e-5
            assert np.abs(q_from_depth - decoded).max() <= bound
            # sizes = tight box of the written mesh (CAMERA bbox.txt / OBJ; REAL <name>.txt / norm)
            name = label["model_list"][i]
            assert name == scene.objects[k].instance.name == meta[instance_id - 1].model
            if top == "camera":
                folder = nocs_root / "obj_models" / "train" / scene.objects[k].instance.synset / name
                bbox = np.loadtxt(folder / "bbox.txt")
                np.testing.assert_allclose(label["sizes"][i], bbox[0] - bbox[1], atol=2e-6)
                np.testing.assert_allclose(label["sizes"][i], _obj_extents(folder / "model.obj"), atol=2e-6)
            else:
                dims = np.loadtxt(nocs_root / "obj_models" / "real_train" / f"{name}.txt")
                np.testing.assert_allclose(label["sizes"][i], dims / np.linalg.norm(dims), atol=2e-6)
                np.testing.assert_allclose(scale, np.linalg.norm(dims), rtol=1e-5)
            assert abs(np.linalg.norm(label["sizes"][i]) - 1.0) < 1e-5
            checked += 1
    assert checked >= 4


def test_camera_depth_encoding_and_composed(nocs_root):
    import cv2

    raw = cv2.imread(str(nocs_root / "camera/train/00000/0000_depth.png"), cv2.IMREAD_UNCHANGED)
    mask = encoding.read_mask(nocs_root / "camera/train/00000/0000_mask.png")
    assert raw.shape == (SIZE[1], SIZE[0], 3) and raw.dtype == np.uint8
    background = mask == 255
    assert (raw[background] == [0, 125, 1]).all()  # 32001 = G 125, R 1, B 0
    composed = cv2.imread(str(nocs_root / "camera_full_depths/train/00000/0000_composed.png"), cv2.IMREAD_UNCHANGED)
    assert composed.dtype == np.uint16 and composed.ndim == 2
    objects = encoding.read_depth(nocs_root / "camera/train/00000/0000_depth.png")
    # with noise off the composed depth equals the object depth wherever an object is seen
    np.testing.assert_array_equal(composed[~background], objects[~background])
    assert (composed[background] > 0).mean() > 0.5


@pytest.mark.parametrize("format, split, scenes", [("nocs", "real_test", 3), ("housecat6d", "test", 5)])
def test_splits_with_enough_objects_hold_every_category(format, split, scenes):
    # default objects_range (2, 6): ceil(K / 2) scenes hold every one of the K categories
    seen = set()
    for scene_index in range(scenes):
        scene = next(scene_frames(format, split, scene_index, 1, SEED, (32, 24), NOISE_OFF, 1))[0]
        seen |= {placed.instance.class_id for placed in scene.objects} - {0}  # 0: distractors
    assert seen == set(range(1, 2 * scenes + 1))


def test_lists_and_test_split_pickles(nocs_root):
    assert (nocs_root / "camera/train_list_all.txt").read_text() == (
        "train/00000/0000\ntrain/00000/0001\ntrain/00001/0000\ntrain/00001/0001\n"
    )
    assert (nocs_root / "real/test_list_all.txt").read_text().split() == [
        "test/scene_1/0000",
        "test/scene_1/0001",
        "test/scene_2/0000",
        "test/scene_2/0001",
    ]
    assert (nocs_root / "camera/val_list_all.txt").exists()
    distractors_seen = [0]
    for split, set_name, pattern in (
        ("real_test", "real_test", "results_test_scene_{}_{:04d}.pkl"),
        ("camera_val", "val", "results_val_{:05d}_{:04d}.pkl"),
    ):
        for scene_index, scene, intrinsics, frame, arrays in _frames(split):
            folder_id = scene_index + 1 if split == "real_test" else scene_index
            result = encoding.read_pickle(
                nocs_root / "results/nocs_results" / set_name / pattern.format(folder_id, frame)
            )
            entry = writer_nocs.frame_entry(split, scene_index, frame)
            assert result["image_path"] == f"data/{split.split('_')[0]}/{entry}"
            mask = encoding.read_mask(nocs_root / split.split("_")[0] / f"{entry}_mask.png")
            visible = [k for k in range(len(scene.objects)) if (arrays.object_index == k).any()]
            meta = encoding.read_meta(nocs_root / split.split("_")[0] / f"{entry}_meta.txt")
            # ground truth: visible objects of class > 0 (distractors left out), with their mask ids
            truth = [(row.instance_id, k) for row, k in zip(meta, visible) if row.class_id > 0]
            distractors_seen[0] += len(meta) - len(truth)
            n = len(truth)
            assert result["gt_RTs"].shape == (n, 4, 4) and result["gt_RTs"].dtype == np.float64
            for i, (instance_id, k) in enumerate(truth):
                expected = np.eye(4)
                expected[:3, :3] = arrays.scales[k] * arrays.rotations[k]
                expected[:3, 3] = arrays.translations[k]
                np.testing.assert_allclose(result["gt_RTs"][i], expected, atol=1e-12)
                assert result["gt_class_ids"][i] == scene.objects[k].instance.class_id
                # every test instance: depth under its mask agrees with gt_RTs applied to the float NOCS
                depth_m = encoding.read_depth(nocs_root / split.split("_")[0] / f"{entry}_depth.png") / 1000.0
                valid = (mask == instance_id) & (depth_m > 0)
                points = backproject(depth_m, intrinsics, valid).astype(np.float64)
                mapped = arrays.nocs[valid] @ result["gt_RTs"][i][:3, :3].T + result["gt_RTs"][i][:3, 3]
                assert np.abs(mapped - points).max(initial=0.0) < 0.002
                # the 8-bit NOCS map agrees up to its quantization (scale / 510 per object axis)
                scale = np.linalg.norm(result["gt_RTs"][i][:3, 0])
                rotation = result["gt_RTs"][i][:3, :3] / scale
                q_from_depth = (points - result["gt_RTs"][i][:3, 3]) @ rotation / scale
                decoded = encoding.read_coord(nocs_root / split.split("_")[0] / f"{entry}_coord.png")[valid] - 0.5
                assert np.abs(q_from_depth - decoded).max(initial=0.0) <= 1.0 / 510 + 0.002 / scale + 1e-5
                # gt_scales = the tight box of the written model (unit diagonal)
                name = scene.objects[k].instance.name
                if split == "real_test":
                    dims = np.loadtxt(nocs_root / "obj_models" / "real_test" / f"{name}.txt")
                    np.testing.assert_allclose(result["gt_scales"][i], dims / np.linalg.norm(dims), atol=2e-6)
                    np.testing.assert_allclose(scale, np.linalg.norm(dims), rtol=1e-5)
                else:
                    bbox = np.loadtxt(
                        nocs_root / "obj_models" / "val" / scene.objects[k].instance.synset / name / "bbox.txt"
                    )
                    np.testing.assert_allclose(result["gt_scales"][i], bbox[0] - bbox[1], atol=2e-6)
                assert tuple(result["gt_bboxes"][i]) == tuple(writer_nocs.mask_bbox(mask == instance_id))
                handle_seen = arrays.handle_pixels[k] >= writer_nocs.HANDLE_VISIBLE_PIXELS
                assert result["gt_handle_visibility"][i] == (
                    0 if (scene.objects[k].instance.category == "mug" and not handle_seen) else 1
                )
            predicted = result["pred_masks"]
            assert predicted.dtype == bool and predicted.shape[:2] == mask.shape
            assert len(result["pred_scores"]) == predicted.shape[2] == len(result["pred_class_ids"])
            assert np.all(np.diff(result["pred_scores"]) <= 0)
            for j in range(predicted.shape[2]):
                rows, columns = np.nonzero(predicted[:, :, j])
                assert tuple(result["pred_bboxes"][j]) == (rows.min(), columns.min(), rows.max() + 1, columns.max() + 1)
            gts = encoding.read_pickle(
                nocs_root
                / "gts"
                / set_name
                / (
                    f"results_real_test_scene_{folder_id}_{frame:04d}.pkl"
                    if split == "real_test"
                    else pattern.format(folder_id, frame)
                )
            )
            np.testing.assert_array_equal(gts["gt_RTs"], result["gt_RTs"])
    assert distractors_seen[0] > 0  # the fixture's seed puts class-0 distractors into some test frames


def test_model_pickles(nocs_root):
    models = encoding.read_pickle(nocs_root / "obj_models/real_train.pkl")
    mug_meta = encoding.read_pickle(nocs_root / "obj_models/mug_meta.pkl")
    assert len(models) == 6
    for name, points in models.items():
        assert points.dtype == np.float64 and points.shape == (1024, 3)
        extents = 2 * np.abs(points).max(axis=0) if "mug" in name else points.max(axis=0) - points.min(axis=0)
        dims = np.loadtxt(nocs_root / "obj_models/real_train" / f"{name}.txt")
        if "mug" in name:
            assert name in mug_meta
            assert abs(np.linalg.norm(extents) - 1.0) < 1e-9  # SPD rescales the shifted mug to unit diagonal
        else:  # samples of the surface: their box is inside the unit-diagonal mesh box and close to it
            assert np.all(extents <= dims / np.linalg.norm(dims) + 1e-6)
            assert np.all(extents >= dims / np.linalg.norm(dims) - 0.03)


def test_deterministic_across_workers(nocs_root, tmp_path):
    # sensor noise on: its draws, like the scene draws, are keyed by (seed, split, scene, frame)
    kwargs = dict(
        format="nocs",
        scenes=2,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        instances_per_category=1,
        splits=("camera_train", "real_test"),
        progress=False,
    )
    first = generate(tmp_path / "a", workers=1, **kwargs)
    second = generate(tmp_path / "b", workers=2, **kwargs)
    assert first.frames == second.frames == 8
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a == files_b
    assert any(name.endswith("_label.pkl") for name in files_a) and any("nocs_results" in name for name in files_a)
    # a split alone equals the same split inside the four-split dataset (draws do not depend on other splits)
    generate(
        tmp_path / "c",
        "nocs",
        scenes=2,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        noise=NOISE_OFF,
        instances_per_category=1,
        splits=("real_test",),
        progress=False,
    )
    alone, full = _files(tmp_path / "c"), _files(nocs_root)
    shared = [name for name in alone if name.startswith(("real/test/", "gts/", "results/")) or name.endswith(".npy")]
    assert len(shared) > 12 and all(full[name] == alone[name] for name in shared)


def test_mean_shapes(nocs_root):
    import trimesh

    from cleanpose.data.synth.scene import build_library, instance_mesh
    from cleanpose.data.synth.shapes import NOCS_CATEGORIES

    priors = np.load(nocs_root / "mean_shapes.npy")
    assert priors.dtype == np.float64 and priors.shape == (6, 1024, 3)
    training = build_library("nocs", "camera_train", SEED, 1) + build_library("nocs", "real_train", SEED, 1)
    for category, points in zip(NOCS_CATEGORIES, priors):
        if category == "mug":
            # SPD's fix: body re-centred along x (min x = −(z extent)/2) and 2·max|p| of unit norm
            assert np.isclose(points[:, 0].min(), (points[:, 2].min() - points[:, 2].max()) / 2, atol=1e-12)
            assert np.isclose(np.linalg.norm(2 * np.abs(points).max(axis=0)), 1.0)
            continue
        # the prior is a surface sample of the shape at the mean training parameters of its category
        unit = tuple(np.mean([i.unit for i in training if i.category == category], axis=0))
        triangles = instance_mesh(category, unit).mesh.triangles
        sample = points[::16]  # brute-force point-triangle distances of 64 points
        closest = trimesh.triangles.closest_point(
            np.tile(triangles, (len(sample), 1, 1)), np.repeat(sample, len(triangles), axis=0)
        )
        distance = np.linalg.norm(closest - np.repeat(sample, len(triangles), axis=0), axis=1)
        assert distance.reshape(len(sample), -1).min(axis=1).max() < 1e-9, category
        assert len(np.unique(points, axis=0)) == 1024


def test_segmentation_results_alias(nocs_root):
    for alias, target in (("REAL275", "real_test"), ("CAMERA25", "val")):
        link = nocs_root / "segmentation_results" / alias
        assert link.is_symlink() and link.resolve() == (nocs_root / "results/nocs_results" / target).resolve()
        assert sorted(p.name for p in link.glob("results_*.pkl")) == sorted(
            p.name for p in (nocs_root / "results/nocs_results" / target).glob("results_*.pkl")
        )
        assert len(list(link.glob("results_*.pkl"))) == 4


def test_noise_changes_depth_only_where_expected(tmp_path):
    generate(
        tmp_path / "n",
        "nocs",
        scenes=1,
        frames_per_scene=2,
        seed=SEED,
        image_size=SIZE,
        instances_per_category=1,
        splits=("real_train",),
        progress=False,
    )
    noisy = encoding.read_depth(tmp_path / "n/real/train/scene_1/0000_depth.png").astype(np.float64)
    for _, _, _, _, arrays in _frames("real_train"):
        clean = np.rint(arrays.depth * 1000.0)
        break
    both = (noisy > 0) & (clean > 0)
    assert 0.5 < both.mean() and ((noisy == 0) & (clean > 0)).any()  # some holes
    difference = noisy[both] - clean[both]
    assert 0.5 < difference.std() < 20.0  # millimetre-scale axial noise


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="scenes must be a positive integer; got 0"):
        generate(tmp_path / "z", scenes=0)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer; got -1"):
        generate(tmp_path / "z", seed=-1)
    with pytest.raises(ConfigError, match=r"objects_range must satisfy 1 <= min <= max <= 12; got \(3, 2\)"):
        generate(tmp_path / "z", objects_range=(3, 2))
    with pytest.raises(ConfigError, match="unknown format 'bop'"):
        generate(tmp_path / "z", format="bop")
    with pytest.raises(ConfigError, match=r"unknown split\(s\) \['train'\] for format nocs"):
        generate(tmp_path / "z", splits=("train",))
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="folder is not writable"):
        generate(blocker / "sub", progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="folder is not empty; pass --overwrite"):
        generate(occupied, progress=False)
    with pytest.raises(OutputError, match=f"holds no {MARKER_FILE}; refusing to delete"):
        generate(occupied, overwrite=True, progress=False)
    assert (occupied / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_previous_output(tmp_path):
    kwargs = dict(
        format="housecat6d",
        scenes=1,
        frames_per_scene=1,
        image_size=(96, 75),
        instances_per_category=1,
        splits=("test",),
        progress=False,
    )
    generate(tmp_path / "h", seed=1, **kwargs)
    (tmp_path / "h" / "stale.txt").write_text("old")
    generate(tmp_path / "h", seed=2, overwrite=True, **kwargs)
    assert not (tmp_path / "h" / "stale.txt").exists()
    assert '"complete": true' in (tmp_path / "h" / MARKER_FILE).read_text()


def test_interrupted_run_leaves_no_accepted_frame(tmp_path, monkeypatch):
    calls = {"count": 0}
    original = encoding.write_color

    def failing_write_color(path, rgb):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt
        original(path, rgb)

    monkeypatch.setattr(encoding, "write_color", failing_write_color)
    with pytest.raises(KeyboardInterrupt):
        generate(
            tmp_path / "i",
            scenes=1,
            frames_per_scene=3,
            seed=SEED,
            image_size=SIZE,
            instances_per_category=1,
            splits=("real_train",),
            progress=False,
        )
    folder = tmp_path / "i/real/train/scene_1"
    assert [p.name for p in (tmp_path / "i").rglob(".*")] == []  # no temporary files
    assert not (tmp_path / "i/real/train_list.txt").exists()
    assert '"complete": false' in (tmp_path / "i" / MARKER_FILE).read_text()
    assert (folder / "0000_label.pkl").exists() and (folder / "0000_color.png").exists()
    assert not (folder / "0001_color.png").exists() and not (folder / "0001_label.pkl").exists()


def test_housecat6d_frames(tmp_path):
    size = (137, 107)
    generate(
        tmp_path / "hc",
        "housecat6d",
        scenes=1,
        frames_per_scene=2,
        seed=3,
        image_size=size,
        noise=NOISE_OFF,
        instances_per_category=1,
        progress=False,
    )
    root = tmp_path / "hc"
    for split, folder in (("train", "scene01"), ("test", "test_scene1")):
        intrinsics = np.loadtxt(root / folder / "intrinsics.txt").reshape(3, 3)
        np.testing.assert_allclose(intrinsics, split_intrinsics("housecat6d", split, size, 3, 0), atol=1e-6)
        meta = encoding.read_meta(root / folder / "meta.txt")
        for scene, _, frame, arrays in scene_frames("housecat6d", split, 0, 2, 3, size, NOISE_OFF, 1):
            name = f"{frame:06d}"
            label = encoding.read_pickle(root / folder / "labels" / f"{name}_label.pkl")
            instance = encoding.read_mask(root / folder / "instance" / f"{name}.png")
            depth_m = encoding.read_depth(root / folder / "depth" / f"{name}.png") / 1000.0
            assert encoding.read_color(root / folder / "rgb" / f"{name}.png").shape == (size[1], size[0], 3)
            np.testing.assert_array_equal(label["instance_ids"], np.arange(1, len(meta) + 1))
            assert list(label["class_ids"]) == [row.class_id for row in meta]
            for i, instance_id in enumerate(label["instance_ids"]):
                placed = scene.objects[i]
                obj = root / "obj_models_small_size_final" / placed.instance.category / f"{placed.instance.name}.obj"
                np.testing.assert_allclose(label["gt_scales"][i], _obj_extents(obj), atol=2e-5)
                valid = (instance == instance_id) & (depth_m > 0)
                if valid.sum() == 0:
                    assert tuple(label["bboxes"][i]) == (0, 0, 0, 0)
                    continue
                points = backproject(depth_m, intrinsics, valid).astype(np.float64)
                mapped = (
                    arrays.scales[i] * arrays.nocs[valid] @ label["rotations"][i].astype(np.float64).T
                    + label["translations"][i]
                )
                assert np.abs(mapped - points).max() < 0.002
            assert (instance[arrays.object_index < 0] == 0).all()


def test_no_temporary_files_left(nocs_root):
    leftovers = [name for name in os.listdir(nocs_root) if name.startswith(".")]
    leftovers += [str(p) for p in nocs_root.rglob("*.part")] + [str(p) for p in nocs_root.rglob("*.tmp")]
    assert leftovers == []
