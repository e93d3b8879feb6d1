"""SPD point models: the sampler against a per-point loop in the reference's draw order, FPS against
brute force, the mug fix on a hand-derived case, OBJ parsing and the model builders."""

import numpy as np
import pytest

from cleanpose.data.prepare import models
from cleanpose.errors import DataFormatError

CUBE_VERTICES = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 2.0) for z in (0.0, 3.0)])
CUBE_FACES = np.array(
    [
        [0, 1, 3],
        [0, 3, 2],
        [4, 6, 7],
        [4, 7, 5],
        [0, 4, 5],
        [0, 5, 1],
        [2, 3, 7],
        [2, 7, 6],
        [0, 2, 6],
        [0, 6, 4],
        [1, 5, 7],
        [1, 7, 3],
    ]
)


def _loop_sampler(vertices, faces, count, state):
    """The reference's per-point loop: random() for the face, then random(2) for the barycentrics."""
    triangles = vertices[faces]
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    cumulative = np.cumsum(0.5 * np.linalg.norm(cross, axis=1))
    points = np.zeros((count, 3))
    for i in range(count):
        face = np.searchsorted(cumulative, state.random_sample() * cumulative[-1])
        r1, r2 = state.random_sample(2)
        root = np.sqrt(r1)
        a, b, c = triangles[face]
        points[i] = (1 - root) * a + root * (1 - r2) * b + root * r2 * c
    return points


def test_sampler_equals_the_per_point_loop_bit_for_bit():
    fast = models.sample_surface(CUBE_VERTICES, CUBE_FACES, 500, np.random.RandomState(4))
    slow = _loop_sampler(CUBE_VERTICES, CUBE_FACES, 500, np.random.RandomState(4))
    np.testing.assert_array_equal(fast, slow)


def test_sampler_is_uniform_by_area():
    points = models.sample_surface(CUBE_VERTICES, CUBE_FACES, 60000, np.random.RandomState(0))
    on_face = [np.isclose(points[:, axis], value) for axis in range(3) for value in (0.0, (1.0, 2.0, 3.0)[axis])]
    assert np.all(np.any(on_face, axis=0))  # every point on the box surface
    areas = np.array([6.0, 6.0, 3.0, 3.0, 2.0, 2.0])  # x faces 2×3, y faces 1×3, z faces 1×2
    fractions = np.array([face.mean() for face in on_face])
    np.testing.assert_allclose(fractions, areas / areas.sum(), atol=0.01)


def test_farthest_points_match_brute_force():
    points = np.random.default_rng(1).normal(size=(300, 3))
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    expected = [0]
    for _ in range(39):
        expected.append(int(np.argmax(distances[:, expected].min(axis=1))))
    np.testing.assert_array_equal(models.farthest_point_indices(points, 40), expected)


def test_mug_fix_hand_derived():
    points = np.array([[-0.2, 0.0, -0.1], [0.4, 0.3, 0.1], [0.1, -0.3, 0.0]])
    fixed, shift, scale = models.mug_fix(points)
    # shift_x = (min z − max z)/2 − min x = (−0.1 − 0.1)/2 + 0.2 = 0.1
    np.testing.assert_allclose(shift, [0.1, 0.0, 0.0])
    shifted = points + shift  # x in [−0.1, 0.5] → box 2·max|p| = (1.0, 0.6, 0.2)
    assert scale == pytest.approx(1 / np.sqrt(1.0 + 0.36 + 0.04))
    np.testing.assert_allclose(fixed, shifted * scale)
    _, special, _ = models.mug_fix(points, models.MUG_SHIFTS["5b0c679eb8a2156c4314179664d18101"])
    np.testing.assert_array_equal(special, [0.083, 0.0, -0.044])


def test_read_obj_triangulates_and_resolves_indices(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("# comment\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nf 1/1/1 2/1 3//1 4\nf -4 -3 -2\n")
    vertices, faces = models.read_obj(path)
    assert vertices.shape == (4, 3)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 1, 2]])


@pytest.mark.parametrize(
    "text, message", [("v 0 0 0\n", "no triangle"), ("v 0 0 0\nf 1 2 3\n", "out of range"), ("v a b c\n", "bad vertex")]
)
def test_read_obj_errors(tmp_path, text, message):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message):
        models.read_obj(path)


def _write_box(path, size):
    lines = [f"v {x * size[0]} {y * size[1]} {z * size[2]}\n" for x, y, z in CUBE_VERTICES / [1.0, 2.0, 3.0]]
    lines += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in CUBE_FACES]
    path.write_text("".join(lines))


def test_camera_model_flips_z_and_fixes_mugs(tmp_path):
    bottle = tmp_path / "02876657" / "aaa" / "model.obj"
    mug = tmp_path / "03797390" / "bbb" / "model.obj"
    for path in (bottle, mug):
        path.parent.mkdir(parents=True)
        _write_box(path, (0.3, 0.4, 0.5))
    points, meta = models.camera_model(bottle, np.random.RandomState(0))
    raw = models.mesh_points(bottle, np.random.RandomState(0))
    assert meta is None and points.shape == (1024, 3)
    np.testing.assert_array_equal(points, raw * [1.0, 1.0, -1.0])
    mug_points, (shift, scale) = models.camera_model(mug, np.random.RandomState(0))
    np.testing.assert_allclose(mug_points, (raw * [1.0, 1.0, -1.0] + shift) * scale)
    assert np.linalg.norm(2 * np.abs(mug_points).max(axis=0)) == pytest.approx(1.0)


def test_real_model_divides_by_the_size_diagonal(tmp_path):
    path = tmp_path / "can_x_norm.obj"
    _write_box(path, (0.06, 0.12, 0.06))
    (tmp_path / "can_x_norm.txt").write_text("0.06 0.12 0.06\n")
    points, meta = models.real_model(path, np.random.RandomState(2))
    raw = models.mesh_points(path, np.random.RandomState(2))
    assert meta is None
    np.testing.assert_allclose(points, raw / np.linalg.norm([0.06, 0.12, 0.06]))
    (tmp_path / "can_x_norm.txt").write_text("0.06 0.12\n")
    with pytest.raises(DataFormatError, match="3 extents"):
        models.real_model(path, np.random.RandomState(2))
