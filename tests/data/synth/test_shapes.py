"""Shape families: closed meshes in the NOCS frame, held-out parameters, facing conventions."""

import numpy as np
import pytest

from cleanpose.data.synth import shapes

ALL = sorted(set(shapes.NOCS_CATEGORIES) | set(shapes.HOUSECAT6D_CATEGORIES))


@pytest.mark.parametrize("category", ALL)
def test_normalized_watertight(category):
    generator = np.random.default_rng(11)
    for novel in (False, True):
        shape = shapes.build_shape(category, shapes.sample_unit_parameters(category, generator, novel))
        lower, upper = shape.mesh.bounds
        assert shape.mesh.is_watertight and shape.mesh.volume > 0
        np.testing.assert_allclose((lower + upper) / 2, 0.0, atol=1e-12)
        assert abs(np.linalg.norm(upper - lower) - 1.0) < 1e-12
        assert shape.handle_faces.shape == (len(shape.mesh.faces),)


def test_held_out_band_separates_train_and_test():
    generator = np.random.default_rng(0)
    low, high = shapes.HELD_OUT_BAND
    train = np.array([shapes.sample_unit_parameters("mug", generator, False)[0] for _ in range(2000)])
    test = np.array([shapes.sample_unit_parameters("mug", generator, True)[0] for _ in range(500)])
    assert ((train < low) | (train >= high)).all() and ((test >= low) & (test <= high)).all()
    # the training draw stays uniform over the allowed set: mass below `low` is low / (1 - band width)
    assert abs((train < low).mean() - low / (1 - (high - low))) < 0.04


def test_facing_conventions():
    generator = np.random.default_rng(2)
    mug = shapes.build_shape("mug", shapes.sample_unit_parameters("mug", generator, False))
    handle_centres = mug.mesh.triangles_center[mug.handle_faces]
    assert handle_centres[:, 0].mean() > 0.2 and abs(handle_centres[:, 2].mean()) < 0.02  # handle at +x
    camera = shapes.build_shape("camera", shapes.sample_unit_parameters("camera", generator, False)).mesh
    front = camera.vertices[camera.vertices[:, 2] > camera.bounds[1, 2] - 1e-9]
    # the lens (a disc) is the front-most part: its rim is round, centred in x
    assert abs(front[:, 0].mean()) < 1e-6 and len(front) >= 16
    unit = shapes.sample_unit_parameters("laptop", generator, False)
    hinge = [name for name, _, _ in shapes.PARAMETER_RANGES["laptop"]].index("hinge_angle_deg")
    for angle_unit, expect_high in ((0.0, False), (1.0, True)):
        unit[hinge] = angle_unit
        laptop = shapes.build_shape("laptop", unit).mesh
        # hinge angle 70° leans the screen over the base (top edge in front of the hinge, +z), 145° leans
        # it back (behind the hinge, −z); the hinge is at the back edge of the base's bottom face
        top = laptop.vertices[laptop.vertices[:, 1] > laptop.bounds[1, 1] - 1e-9]
        hinge_z = laptop.vertices[laptop.vertices[:, 1] < laptop.bounds[0, 1] + 1e-9][:, 2].min()
        assert (top[:, 2].mean() < hinge_z) == expect_high


def test_held_out_axis_changes_the_normalized_shape():
    # the first parameter must matter after normalization, or "novel" test shapes would not be novel
    generator = np.random.default_rng(5)
    for category in ALL:
        unit = shapes.sample_unit_parameters(category, generator, False)
        low, high = unit.copy(), unit.copy()
        low[0], high[0] = 0.0, 1.0
        mesh_low, mesh_high = shapes.build_shape(category, low).mesh, shapes.build_shape(category, high).mesh
        extents_change = np.abs(np.ptp(mesh_low.vertices, axis=0) - np.ptp(mesh_high.vertices, axis=0)).max()
        centroid_change = np.linalg.norm(mesh_low.center_mass - mesh_high.center_mass)
        assert max(extents_change, centroid_change) > 0.02, category


def test_unknown_category_and_bad_unit():
    with pytest.raises(ValueError, match="unknown shape category 'chair'"):
        shapes.sample_unit_parameters("chair", np.random.default_rng(0), False)
    with pytest.raises(ValueError, match=r"bottle: unit parameters must have shape \(6,\)"):
        shapes.shape_parameters("bottle", np.zeros(2))


@pytest.mark.parametrize("category", ["teapot", "cutlery", "tube", "shoe", "remote"])
def test_housecat6d_facing_conventions(category):
    # the module docstring's facing conventions, checked on training and novel instances
    generator = np.random.default_rng(7)
    for novel in (False, True, False, True):
        mesh = shapes.build_shape(category, shapes.sample_unit_parameters(category, generator, novel)).mesh
        vertices = mesh.vertices
        if category == "teapot":  # spout to +x (its tip rises above the body centre), handle to −x
            assert vertices[np.argmax(vertices[:, 0]), 1] > 0.05
            handle = vertices[vertices[:, 0] < vertices[:, 0].min() + 0.02]
            assert np.abs(handle[:, 1]).max() < 0.2
        elif category == "cutlery":  # long axis z, working end (the widest part) at +z
            assert np.argmax(np.ptp(vertices, axis=0)) == 2
            assert vertices[np.abs(vertices[:, 0]) > 0.9 * np.abs(vertices[:, 0]).max(), 2].mean() > 0
        elif category == "tube":  # cap at +z, crimped (widest, flattest) end at −z
            assert mesh.center_mass[2] > 0 and vertices[np.argmax(np.abs(vertices[:, 0])), 2] < 0
        elif category == "shoe":  # opening at the top rear (−z); toe at +z
            assert vertices[vertices[:, 1] > vertices[:, 1].max() - 0.02, 2].mean() < -0.2
        else:  # remote: long axis z, buttons on the +y face, centred in x
            top = vertices[vertices[:, 1] > vertices[:, 1].max() - 1e-9]
            assert np.argmax(np.ptp(vertices, axis=0)) == 2 and abs(top[:, 0].mean()) < 1e-6
