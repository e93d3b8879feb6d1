"""Scene sampling invariants and frame rendering against hand-built scenes."""

import numpy as np
import pytest

from cleanpose.data.synth import scene as scene_module
from cleanpose.data.synth.scene import (
    Appearance,
    PlacedObject,
    SceneSpec,
    build_library,
    instance_mesh,
    look_at,
    render_frame,
    sample_scene,
)
from cleanpose.data.synth.sensor import SensorNoise

K = np.array([[200.0, 0.0, 79.5], [0.0, 200.0, 59.5], [0.0, 0.0, 1.0]])
SIZE = (160, 120)


def test_library_ids_and_novelty():
    train = build_library("nocs", "camera_train", 3, 2)
    again = build_library("nocs", "camera_train", 3, 2)
    test = build_library("nocs", "real_test", 3, 2)
    assert train == again and len(train) == 12 and len({i.name for i in train}) == 12
    assert all(len(i.name) == 32 and int(i.name, 16) >= 0 and i.synset for i in train)
    assert all(i.diagonal is None and not i.novel for i in train)
    assert all(i.name.endswith("_norm") and i.category in i.name and i.novel and i.diagonal > 0 for i in test)
    housecat = build_library("housecat6d", "train", 3, 1)
    assert [i.class_id for i in housecat] == list(range(1, 11))
    assert all(i.name.startswith(f"{i.category}-") for i in housecat)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_scene_invariants(seed):
    library = build_library("nocs", "real_train", 0, 3)
    scene = sample_scene(library, np.random.default_rng(seed), 6, K, SIZE)
    assert 2 <= len(scene.objects) <= 6
    footprints = []
    for placed in scene.objects:
        vertices = placed.scale * instance_mesh(placed.instance.category, placed.instance.unit).mesh.vertices
        world = vertices @ placed.rotation.T + placed.translation
        assert abs(world[:, 1].min()) < 1e-12  # resting on the table plane y = 0
        np.testing.assert_allclose(placed.rotation @ placed.rotation.T, np.eye(3), atol=1e-12)
        footprints.append((world[:, [0, 2]].mean(axis=0), world[:, [0, 2]]))
    for camera in scene.cameras:
        eye = -camera.rotation.T @ camera.translation
        assert eye[1] > 0.05  # above the table, looking down
        forward = camera.rotation[2]
        # the view axis passes near the table centre region at 0.3-1.5 m
        target_distance = -eye[1] / forward[1]
        assert forward[1] < 0 and 0.28 < np.linalg.norm(forward * target_distance) < 1.8


def _single_object_scene(category: str, camera_eye: np.ndarray) -> SceneSpec:
    library = [i for i in build_library("nocs", "real_train", 0, 1) if i.category == category]
    instance = library[0]
    mesh = instance_mesh(instance.category, instance.unit).mesh
    rotation = np.eye(3)
    translation = np.array([0.0, -mesh.bounds[0, 1] * 0.15, 0.0])  # scale 0.15 m, resting on y = 0
    look = look_at(camera_eye, np.array([0.0, 0.04, 0.0]))
    plain = Appearance(np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5]), 0, 1.0)
    placed = PlacedObject(instance, 0.15, rotation, translation, plain)
    return SceneSpec((placed,), (look,), 0.8, plain, plain, plain, np.array([0.0, 1.0, 0.0]), 0.3)


def test_mug_handle_visibility_depends_on_view():
    # the handle points to +x in the object frame; a camera at +x sees it, one at -x does not
    from_handle_side = _single_object_scene("mug", np.array([0.5, 0.25, 0.0]))
    from_far_side = _single_object_scene("mug", np.array([-0.5, 0.12, 0.0]))
    noise = SensorNoise(enabled=False)
    seen = render_frame(from_handle_side, 0, K, SIZE, noise, np.random.default_rng(0))
    hidden = render_frame(from_far_side, 0, K, SIZE, noise, np.random.default_rng(0))
    assert seen.handle_pixels[0] > 20 and hidden.handle_pixels[0] == 0


def test_render_frame_pose_and_nocs_consistency():
    scene = _single_object_scene("can", np.array([0.3, 0.4, 0.2]))
    arrays = render_frame(scene, 0, K, SIZE, SensorNoise(enabled=False), np.random.default_rng(0))
    camera = scene.cameras[0]
    placed = scene.objects[0]
    np.testing.assert_allclose(arrays.rotations[0], camera.rotation @ placed.rotation, atol=1e-12)
    np.testing.assert_allclose(
        arrays.translations[0], camera.rotation @ placed.translation + camera.translation, atol=1e-12
    )
    pixels = arrays.object_index == 0
    assert pixels.sum() > 200
    q = arrays.nocs[pixels]
    assert np.abs(q).max() <= 0.5 + 1e-9  # inside the unit-diagonal box
    # the NOCS point of each pixel lies on the mesh surface: brute-force point-triangle distances
    import trimesh

    mesh = instance_mesh(placed.instance.category, placed.instance.unit).mesh
    sample = q[:: max(1, len(q) // 25)]
    triangles = np.repeat(mesh.triangles[None], len(sample), axis=0).reshape(-1, 3, 3)
    closest = trimesh.triangles.closest_point(triangles, np.repeat(sample, len(mesh.triangles), axis=0))
    distance = np.linalg.norm(closest - np.repeat(sample, len(mesh.triangles), axis=0), axis=1)
    assert distance.reshape(len(sample), -1).min(axis=1).max() < 1e-9
    # clean depth equals the z of s·R·q + t
    points = 0.15 * q @ arrays.rotations[0].T + arrays.translations[0]
    np.testing.assert_allclose(arrays.depth[pixels], points[:, 2], atol=1e-9)
    # the background has the table top (y = 0 in world) right under the object
    table = arrays.object_index < 0
    world = (np.dstack(np.meshgrid(np.arange(SIZE[0]), np.arange(SIZE[1]))) - K[:2, 2]) / K[0, 0]
    rays = np.concatenate([world, np.ones(world.shape[:2] + (1,))], axis=2)
    world_points = (rays * arrays.depth[:, :, None] - camera.translation) @ camera.rotation
    on_top = table & (np.abs(world_points[:, :, 0]) < 0.7) & (np.abs(world_points[:, :, 2]) < 0.7) & (arrays.depth > 0)
    assert on_top.sum() > 1000 and np.abs(world_points[on_top, 1]).max() < 1e-6  # float32 background pass


def test_room_constants_enclose_table():
    assert scene_module.ROOM_LOWER[1] < -scene_module.TABLE_THICKNESS
    assert (scene_module.ROOM_UPPER[[0, 2]] > 1.0).all()


@pytest.mark.parametrize(
    "dataset, split, objects_range",
    [("nocs", "real_test", (2, 6)), ("housecat6d", "test", (2, 6)), ("nocs", "camera_train", (4, 5))],
)
def test_consecutive_scenes_cover_every_category(dataset, split, objects_range):
    library = build_library(dataset, split, 0, 1)
    categories = [instance.category for instance in library]
    low = objects_range[0]
    seen = []
    for scene_index in range(-(-len(categories) // low)):  # ceil(K / min objects) scenes
        scene = sample_scene(
            library,
            np.random.default_rng([7, scene_index]),
            1,
            K,
            SIZE,
            objects_range,
            category_offset=scene_index * low,
        )
        names = [placed.instance.category for placed in scene.objects]
        # the first `low` objects are the next categories in library order, the rest are drawn
        assert names[:low] == [categories[(scene_index * low + k) % len(categories)] for k in range(low)]
        seen += names
    assert set(seen) == set(categories)


def test_world_caster_built_once_per_scene_and_frames_match_a_fresh_build():
    scene = sample_scene(
        build_library("nocs", "camera_train", 0, 1), np.random.default_rng(5), 3, K, SIZE, objects_range=(3, 3)
    )
    noise = SensorNoise(enabled=False)
    scene_module._world_caster_cache.clear()
    in_order = [render_frame(scene, frame, K, SIZE, noise, np.random.default_rng(frame)) for frame in range(3)]
    structure = scene_module.world_caster(scene)
    assert scene_module.world_caster(scene) is structure  # reused, not rebuilt
    for frame in (2, 0):  # oracle: the frame rendered with a structure built afresh for it alone
        scene_module._world_caster_cache.clear()
        alone = render_frame(scene, frame, K, SIZE, noise, np.random.default_rng(frame))
        assert scene_module.world_caster(scene) is not structure
        assert (alone.object_index >= 0).sum() > 100
        for name in ("color", "depth", "object_index", "nocs"):
            np.testing.assert_array_equal(getattr(alone, name), getattr(in_order[frame], name))
