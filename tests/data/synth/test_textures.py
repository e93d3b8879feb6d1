"""Texture sampling and surface colours against hand-worked values."""

import numpy as np
import trimesh

from cleanpose.data.synth.render import barycentric_coordinates
from cleanpose.data.synth.textures import SurfaceColours, colours_from_visual, concatenate_colours, sample_bilinear


def test_sample_bilinear_texel_centres_and_midpoints():
    image = np.array([[[0, 0, 0], [200, 0, 0]], [[0, 100, 0], [0, 0, 50]]], np.uint8)  # rows: top, bottom
    # texel (row r, column c) centre at u = (c + 0.5)/2, v = 1 - (r + 0.5)/2
    centres = np.array([[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.75, 0.25]])
    expected = np.array([[0, 0, 0], [200, 0, 0], [0, 100, 0], [0, 0, 50]]) / 255.0
    np.testing.assert_allclose(sample_bilinear(image, centres), expected, atol=1e-12)
    # halfway between the top texels; the centre of all four; repeat wrapping (u + 1, v - 2)
    np.testing.assert_allclose(sample_bilinear(image, np.array([[0.5, 0.75]])), [[100 / 255, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(
        sample_bilinear(image, np.array([[0.5, 0.5]])), [[50 / 255, 25 / 255, 12.5 / 255]], atol=1e-12
    )
    np.testing.assert_allclose(sample_bilinear(image, centres + [1.0, -2.0]), expected, atol=1e-12)
    # u = 0 lies halfway between column 1 (wrapped) and column 0
    np.testing.assert_allclose(sample_bilinear(image, np.array([[0.0, 0.75]])), [[100 / 255, 0, 0]], atol=1e-12)


def test_albedo_interpolates_corner_colours_times_texture():
    image = np.full((2, 2, 3), 128, np.uint8)
    corners = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]], np.float32)
    uv = np.zeros((2, 3, 2), np.float32)
    colours = SurfaceColours(corners, uv, np.array([-1, 0], np.int32), (image,))
    weights = np.array([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(colours.albedo(np.array([0, 1]), weights), [[0.2, 0.3, 0.5], [128 / 255] * 3], atol=1e-7)


def test_barycentric_coordinates_round_trip():
    generator = np.random.default_rng(0)
    corners = generator.normal(size=(50, 3, 3))
    weights = generator.dirichlet(np.ones(3), size=50)
    points = np.einsum("mk,mkc->mc", weights, corners)
    np.testing.assert_allclose(barycentric_coordinates(points, corners), weights, atol=1e-9)


def test_colours_from_visual_kinds():
    box = trimesh.creation.box()
    assert colours_from_visual(trimesh.Trimesh(box.vertices, box.faces, process=False)) is None  # no colours
    vertex = trimesh.Trimesh(box.vertices, box.faces, vertex_colors=np.tile([255, 0, 0, 255], (8, 1)), process=False)
    face = trimesh.Trimesh(box.vertices, box.faces, face_colors=np.tile([0, 51, 0, 255], (12, 1)), process=False)
    np.testing.assert_allclose(colours_from_visual(vertex).corner_colours, np.tile([1.0, 0, 0], (12, 3, 1)))
    np.testing.assert_allclose(colours_from_visual(face).corner_colours, np.tile([0, 0.2, 0], (12, 3, 1)), atol=1e-7)
    merged = concatenate_colours([colours_from_visual(vertex), None], [12, 2])
    assert merged.corner_colours.shape == (14, 3, 3) and np.allclose(merged.corner_colours[12:], 0.6)
    assert concatenate_colours([None, None], [1, 2]) is None
