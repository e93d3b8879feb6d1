"""Reading, canonicalising and rendering the user's meshes; every bad input's error.

Oracles: the hand-written box files (corner, extents, unit), the NOCS rule (centre on the box, unit
diagonal), and for rendering a by-hand projection of the box's front side onto the pixel grid.
"""

import logging
import shutil

import numpy as np
import pytest
import yaml

from cleanpose.data.synth.mesh_library import MeshEntry, handle_faces, load_mesh, scan_models
from cleanpose.data.synth.scene import Appearance, Instance, PlacedObject, SceneSpec, look_at, render_frame
from cleanpose.data.synth.sensor import SensorNoise
from cleanpose.errors import ConfigError, DataFormatError
from tests.data.synth.mesh_builders import (
    QUADRANT_COLOURS,
    expected_quadrant,
    write_coloured_box_ply,
    write_textured_box,
)

LOWER_CM, EXTENTS_CM = np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0, 8.0])
K = np.array([[300.0, 0.0, 79.5], [0.0, 300.0, 59.5], [0.0, 0.0, 1.0]])
SIZE = (160, 120)


def _canonical(file_points, lower, extents, unit):
    """NOCS rule by hand: metres, centred on the box, divided by its diagonal."""
    centre = (lower + extents / 2) * unit
    return (np.asarray(file_points) * unit - centre) / np.linalg.norm(extents * unit)


def test_textured_obj_canonicalised_with_units(tmp_path):
    path = write_textured_box(tmp_path / "camera", "box", LOWER_CM, EXTENTS_CM)
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"defaults": {"unit": "cm"}}))
    catalog = scan_models(tmp_path, "nocs")
    (entry,) = catalog.entries
    assert entry.category == "camera" and entry.name == "box" and entry.unit == 0.01 and entry.path == str(path)
    loaded = load_mesh(entry)
    assert abs(loaded.diagonal - np.linalg.norm(EXTENTS_CM) / 100) < 1e-12
    mesh = loaded.shape.mesh
    np.testing.assert_allclose(
        mesh.bounds, _canonical([LOWER_CM, LOWER_CM + EXTENTS_CM], LOWER_CM, EXTENTS_CM, 0.01), atol=1e-12
    )
    assert abs(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]) - 1.0) < 1e-12
    assert loaded.shape.colours is not None and len(loaded.shape.colours.images) == 1
    assert not loaded.shape.handle_faces.any()


def test_up_front_and_transform_rotate_into_the_canonical_axes(tmp_path):
    write_textured_box(tmp_path, "box", LOWER_CM, EXTENTS_CM)
    reference = load_mesh(MeshEntry(str(tmp_path / "box.obj"), "camera", "box")).shape.mesh.vertices
    # up = file +z, front = file -y: canonical (x, y, z) = (x_f, z_f, -y_f), then re-centred and normalized
    file_points = reference * np.linalg.norm(EXTENTS_CM)  # any centring: the rule re-centres
    expected = np.stack([file_points[:, 0], file_points[:, 2], -file_points[:, 1]], axis=1)
    expected = (expected - (expected.min(0) + expected.max(0)) / 2) / np.linalg.norm(EXTENTS_CM)
    transform = [[1, 0, 0, 5], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]]
    (tmp_path / "models.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"file": "box.obj", "category": "laptop", "up": "+z", "front": "-y", "name": "axes"},
                    {"file": "box.obj", "category": "laptop", "transform": transform, "name": "matrix"},
                ]
            }
        )
    )
    catalog = scan_models(tmp_path, "nocs")
    assert [entry.name for entry in catalog.entries] == ["axes", "matrix"]
    for entry in catalog.entries:
        np.testing.assert_allclose(load_mesh(entry).shape.mesh.vertices, expected, atol=1e-12)


def test_glb_round_trip_keeps_geometry_and_texture(tmp_path):
    import trimesh

    obj = write_textured_box(tmp_path, "box", LOWER_CM, EXTENTS_CM)
    trimesh.load(obj, process=False).export(tmp_path / "box.glb")
    from_obj = load_mesh(MeshEntry(str(obj), "camera", "a"))
    from_glb = load_mesh(MeshEntry(str(tmp_path / "box.glb"), "camera", "b"))
    np.testing.assert_allclose(from_glb.shape.mesh.vertices, from_obj.shape.mesh.vertices, atol=1e-6)
    faces = np.arange(12)
    weights = np.tile([0.2, 0.3, 0.5], (12, 1))
    np.testing.assert_allclose(
        from_glb.shape.colours.albedo(faces, weights), from_obj.shape.colours.albedo(faces, weights), atol=1e-6
    )


def _head_on_frame(entry: MeshEntry, light=(0.0, 0.45, 1.0)):
    """Render `entry` resting on the table, camera 0.35 m in front of its +z side, looking along −z."""
    loaded = load_mesh(entry)
    instance = Instance("box", entry.category, 3, (), False, None, loaded.diagonal, entry)
    half_height = -loaded.shape.mesh.bounds[0, 1] * loaded.diagonal
    placed = PlacedObject(
        instance,
        loaded.diagonal,
        np.eye(3),
        np.array([0.0, half_height, 0.0]),
        Appearance(np.full(3, 0.5), np.full(3, 0.5), 0, 1.0),
    )
    camera = look_at(np.array([0.0, 0.03, 0.35]), np.array([0.0, 0.03, 0.0]))
    plain = Appearance(np.full(3, 0.3), np.full(3, 0.3), 0, 1.0)
    light = np.asarray(light) / np.linalg.norm(light)
    scene = SceneSpec((placed,), (camera,), 0.8, plain, plain, plain, light, 0.3)
    arrays = render_frame(scene, 0, K, SIZE, SensorNoise(enabled=False), np.random.default_rng(0))
    return placed, arrays


def _front_side_pixels(placed, extents_m):
    """By hand: pixels whose ray meets the box's +z side (world z = depth/2), with their world points."""
    columns, rows = np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]))
    depth = 0.35 - extents_m[2] / 2  # camera looks along world −z from z = 0.35
    x = depth * (columns - K[0, 2]) / K[0, 0]
    y = 0.03 - depth * (rows - K[1, 2]) / K[1, 1]
    world = np.stack([x, y, np.full_like(x, extents_m[2] / 2)], axis=-1)
    local = world - placed.translation
    inside = (np.abs(local[..., 0]) < extents_m[0] / 2) & (np.abs(local[..., 1]) < extents_m[1] / 2)
    return inside, local


def test_textured_box_pattern_and_nocs_at_hand_projected_pixels(tmp_path):
    path = write_textured_box(tmp_path, "box", LOWER_CM, EXTENTS_CM)
    entry = MeshEntry(str(path), "camera", "box", unit=0.01)
    placed, arrays = _head_on_frame(entry)
    extents_m = EXTENTS_CM / 100
    inside, local = _front_side_pixels(placed, extents_m)
    u = local[..., 0] / extents_m[0] + 0.5  # the +z side maps x → u, y → v
    v = local[..., 1] / extents_m[1] + 0.5
    # stay 1.5 pixels plus one texel away from the quadrant borders and the side's edges
    margin_u = 1.5 * (0.31 / K[0, 0]) / extents_m[0] + 1 / 64
    margin_v = 1.5 * (0.31 / K[1, 1]) / extents_m[1] + 1 / 64
    away = inside & (np.abs(u - 0.5) > margin_u) & (np.abs(v - 0.5) > margin_v)
    away &= (u > margin_u) & (u < 1 - margin_u) & (v > margin_v) & (v < 1 - margin_v)
    assert away.sum() > 800
    assert (arrays.object_index[away] == 0).all()
    # the NOCS map is the canonical coordinate of the hand-projected point
    np.testing.assert_allclose(arrays.nocs[away], local[away] / placed.scale, atol=1e-9)
    # colour: the texture quadrant at (u, v), times one common shading factor
    expected = expected_quadrant(u[away], v[away]).astype(float) / 255
    colour = arrays.color[away].astype(float)
    shading = colour.max(axis=1) / 255
    assert shading.min() > 0.3
    np.testing.assert_allclose(colour / 255, expected * shading[:, None], atol=8 / 255)  # sensor colour noise
    for colour in QUADRANT_COLOURS.values():  # every quadrant is seen
        assert (expected == np.array(colour) / 255).all(axis=1).sum() > 150


def test_vertex_coloured_ply_interpolates_across_the_box(tmp_path):
    path = write_coloured_box_ply(tmp_path / "box.ply", LOWER_CM / 100, EXTENTS_CM / 100)
    placed, arrays = _head_on_frame(MeshEntry(str(path), "camera", "box"))
    extents_m = EXTENTS_CM / 100
    inside, local = _front_side_pixels(placed, extents_m)
    fraction = local[..., 0] / extents_m[0] + 0.5  # 0 at the red (min x) end, 1 at the blue end
    core = inside & (fraction > 0.05) & (fraction < 0.95) & (np.abs(local[..., 1]) < 0.45 * extents_m[1])
    assert core.sum() > 1500 and (arrays.object_index[core] == 0).all()
    colour = arrays.color[core].astype(float)
    blue_share = colour[:, 2] / (colour[:, 0] + colour[:, 2])
    np.testing.assert_allclose(blue_share, fraction[core], atol=0.06)
    assert colour[:, 1].max() <= 6  # no green anywhere (noise only)


def test_mug_handle_faces_found_outside_the_body():
    import trimesh

    body = trimesh.creation.cylinder(radius=0.04, height=0.1, sections=24)
    body.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # axis +y
    handle = trimesh.creation.box(extents=[0.03, 0.05, 0.01])
    handle.apply_translation([0.061, 0.0, 0.0])  # x in [0.046, 0.076]: beyond 1.05 × the 4 cm radius
    mesh = trimesh.util.concatenate([body, handle])
    found = handle_faces(mesh)
    np.testing.assert_array_equal(found, np.arange(len(mesh.faces)) >= len(body.faces))


def _write_bad_inputs(root):
    write_textured_box(root / "camera", "good", LOWER_CM / 100, EXTENTS_CM / 100)
    (root / "bowl").mkdir(parents=True)
    (root / "bowl" / "broken.ply").write_text("ply\nthis is not a mesh\n")
    (root / "can").mkdir()
    (root / "can" / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    write_textured_box(root / "laptop", "untextured", LOWER_CM, EXTENTS_CM, texture_name="gone.png")
    (root / "mug").mkdir()
    (root / "mug" / "readme.txt").write_text("no mesh here")
    write_textured_box(root / "bottle", "broken_texture", LOWER_CM, EXTENTS_CM)
    (root / "bottle" / "broken_texture.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def test_bad_inputs_raise_naming_the_file(tmp_path):
    _write_bad_inputs(tmp_path)
    # folders are checked in sorted order; each error names the file, then its folder is removed
    for folder, message in (
        (
            "bottle",
            r"bottle/broken_texture.obj: texture .*broken_texture.png cannot be read as an "
            r"image",
        ),
        ("bowl", r"bowl/broken.ply: cannot be read as a mesh"),
        ("can", r"can/points.obj: mesh has no faces"),
        (
            "laptop",
            r"laptop/untextured.obj: texture .*gone.png named in .*untextured.mtl does not "
            r"exist",
        ),
        ("mug", r"mug: category folder holds no mesh"),
    ):
        with pytest.raises(DataFormatError, match=message):
            scan_models(tmp_path, "nocs")
        shutil.rmtree(tmp_path / folder)
    assert [entry.name for entry in scan_models(tmp_path, "nocs").entries] == ["good"]
    (tmp_path / "can").mkdir()
    (tmp_path / "can" / "scan.gltf").write_text('{"asset": {"version": "2.0"}, "images": [{"uri": "gone%20too.png"}]}')
    with pytest.raises(DataFormatError, match=r"can/scan.gltf: texture .*gone too.png named in .*scan.gltf does not"):
        scan_models(tmp_path, "nocs")
    shutil.rmtree(tmp_path / "can")
    (tmp_path / "chair").mkdir()
    with pytest.raises(
        DataFormatError,
        match=r"chair: unknown nocs category 'chair'; valid categories: bottle, bowl, "
        r"camera, can, laptop, mug",
    ):
        scan_models(tmp_path, "nocs")
    with pytest.raises(DataFormatError, match=r"unknown housecat6d category 'camera'; valid categories: box, bottle"):
        scan_models(tmp_path, "housecat6d")
    with pytest.raises(ConfigError, match="unknown format 'ycb'; expected one of: nocs, housecat6d"):
        scan_models(tmp_path, "ycb")
    with pytest.raises(ConfigError, match="--models folder does not exist"):
        scan_models(tmp_path / "nowhere", "nocs")


def test_skip_bad_counts_and_logs_every_skip(tmp_path, caplog):
    _write_bad_inputs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cleanpose.data.synth.mesh_library"):
        catalog = scan_models(tmp_path, "nocs", skip_bad=True)
    assert [entry.name for entry in catalog.entries] == ["good"]
    assert len(catalog.skipped) == 5
    for text in (
        "broken.ply: cannot be read",
        "points.obj: mesh has no faces",
        "gone.png",
        "holds no mesh",
        "broken_texture.png cannot be read as an image",
    ):
        assert sum(text in line for line in catalog.skipped) == 1
    assert "skipped 5 bad mesh file(s) or folder(s)" in caplog.text
    assert caplog.text.count("skipped: ") == 5


def test_mapping_file_errors(tmp_path):
    write_textured_box(tmp_path, "box", LOWER_CM, EXTENTS_CM)
    cases = [
        (
            {"models": [{"file": "box.obj", "category": "mug", "colour": 1}]},
            r"models\[0\]: unknown key\(s\) colour; valid keys: file, category",
        ),
        ({"models": [{"file": "box.obj"}]}, r"models\[0\]: 'file' and 'category' are required"),
        (
            {"models": [{"file": "box.obj", "category": "mug", "unit": "inch"}]},
            r"unit 'inch'; expected one of m, cm, mm",
        ),
        ({"models": [{"file": "box.obj", "category": "mug", "up": "+y", "front": "-y"}]}, "must be different axes"),
        (
            {
                "models": [
                    {
                        "file": "box.obj",
                        "category": "mug",
                        "transform": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                    }
                ]
            },
            "is not orthogonal",
        ),
        (
            {"models": [{"file": "box.obj", "category": "camera", "symmetric": True}]},
            "symmetric: true cannot be labelled for a nocs camera",
        ),
        (
            {"models": [{"file": "box.obj", "category": "bottle", "symmetric": False}]},
            "symmetric: false cannot be labelled for a nocs bottle",
        ),
        ({"models": [{"file": "missing.obj", "category": "mug"}]}, "missing.obj: mesh file does not exist"),
        (
            {"models": [{"file": "box.obj", "category": "mug"}, {"file": "box.obj", "category": "mug"}]},
            "instance name 'box' of category mug is also used by",
        ),
        ({"defaults": {"category": "mug"}}, r"defaults: unknown key\(s\) category"),
    ]
    for mapping, message in cases:
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(mapping))
        with pytest.raises(DataFormatError, match=message):
            scan_models(tmp_path, "nocs")
    # a handle-less mug may be flagged symmetric: no handle faces at all
    (tmp_path / "models.yaml").write_text(
        yaml.safe_dump({"models": [{"file": "box.obj", "category": "mug", "symmetric": True}]})
    )
    (entry,) = scan_models(tmp_path, "nocs").entries
    assert entry.symmetric and not load_mesh(entry).shape.handle_faces.any()


def test_nocs_obj_models_layout(tmp_path, caplog):
    import trimesh

    box = trimesh.creation.box(extents=[0.3, 0.5, 0.8])
    box.apply_scale(1 / np.linalg.norm([0.3, 0.5, 0.8]))
    camera_model = tmp_path / "train" / "03797390" / "abc123" / "model.obj"
    camera_model.parent.mkdir(parents=True)
    flipped = trimesh.Trimesh(box.vertices * [1, 1, -1] + [0, 0, 0.1], box.faces[:, ::-1], process=False)
    flipped.export(camera_model)
    distractor = tmp_path / "train" / "99999999" / "def" / "model.obj"
    distractor.parent.mkdir(parents=True)
    flipped.export(distractor)
    real = tmp_path / "real_test" / "bowl_white_small_norm.obj"
    real.parent.mkdir()
    trimesh.Trimesh(box.vertices * 0.2, box.faces, process=False).export(real)
    with caplog.at_level(logging.INFO, logger="cleanpose.data.synth.mesh_library"):
        catalog = scan_models(tmp_path, "nocs")
    assert "left out 1 CAMERA models of non-NOCS synsets" in caplog.text
    mug, bowl = catalog.entries
    assert (mug.category, mug.name, mug.synset, mug.metric) == ("mug", "abc123", "03797390", False)
    assert (bowl.category, bowl.name, bowl.metric) == ("bowl", "bowl_white_small_norm", True)
    np.testing.assert_allclose(load_mesh(mug).shape.mesh.bounds, box.bounds, atol=1e-6)  # flipped back, re-centred
    assert load_mesh(mug).diagonal == 1.0 and abs(load_mesh(bowl).diagonal - 0.2) < 1e-6
