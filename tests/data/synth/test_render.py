"""The ray caster against analytic images of known meshes at known poses."""

import numpy as np
import trimesh

from cleanpose.data.synth.render import MeshCaster, cast_rays, pixel_rays

K = np.array([[500.0, 0.0, 79.5], [0.0, 480.0, 59.5], [0.0, 0.0, 1.0]])
W, H = 160, 120


def test_square_plate_mask_and_depth_exact():
    # a 0.1 m × 0.08 m box, front face at z = 0.8 m, facing the camera, offset to the right
    half_x, half_y, centre_x, front = 0.05, 0.04, 0.02, 0.8
    box = trimesh.creation.box([2 * half_x, 2 * half_y, 0.03])
    box.apply_translation([centre_x, 0.0, front + 0.015])
    hits = cast_rays(box.vertices, box.faces, K, W, H)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    x, y = (u - K[0, 2]) / K[0, 0] * front, (v - K[1, 2]) / K[1, 1] * front
    expected = (np.abs(x - centre_x) < half_x) & (np.abs(y) < half_y)
    np.testing.assert_array_equal(hits.face >= 0, expected)
    np.testing.assert_allclose(hits.points[expected][:, 2], front, atol=1e-12)
    np.testing.assert_allclose(
        hits.cos_incidence[expected], 1.0 / np.linalg.norm(pixel_rays(K, W, H)[expected], axis=1), atol=1e-12
    )
    assert (hits.normals[expected] @ np.array([0.0, 0.0, -1.0]) > 0.999).all()


def test_sphere_depth_and_area_analytic():
    radius, distance = 0.05, 0.6
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    sphere.apply_translation([0.0, 0.0, distance])
    hits = cast_rays(sphere.vertices, sphere.faces, K, W, H)
    rays = pixel_rays(K, W, H)
    # analytic ray-sphere intersection: |z·d − c|² = r² → smallest root z
    a = (rays**2).sum(axis=2)
    b = -2.0 * distance * rays[:, :, 2]
    c = distance**2 - radius**2
    disc = b**2 - 4 * a * c
    inside = disc > 0
    depth = (-b - np.sqrt(np.where(inside, disc, 0.0))) / (2 * a)
    hit = hits.face >= 0
    # disc = 4a(r² − ρ²) with ρ the distance of the sphere centre from the ray; rays with ρ < 0.98 r
    # are clear of the tessellated silhouette and must hit
    sure = disc > 4 * a * (radius**2) * (1 - 0.98**2)
    assert hit[sure].all() and not hit[~inside].any()
    assert abs(hit.sum() - inside.sum()) / inside.sum() < 0.02
    # depth within the tessellation error of a level-5 icosphere (< 0.2 mm at r = 5 cm)
    assert np.abs(hits.points[:, :, 2][sure] - depth[sure]).max() < 2e-4
    # hit points lie on the pixel rays: back-projection with the depth returns them
    np.testing.assert_allclose(hits.points[hit], rays[hit] * hits.points[hit][:, 2:3], atol=1e-12)


def test_caster_searching_a_structure_of_another_frame_matches_fresh_intersectors():
    # one Embree structure built in a "world" frame, reused for two camera poses. Oracles, built afresh
    # for each pose: trimesh's intersector on the world mesh with the rays moved into the world frame
    # (same float32 inputs: the same triangles), and a caster built from the camera-frame vertices
    # (other float32 rounding: the same pixels and points, the triangle may differ at an edge)
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    world = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    world.apply_translation([0.01, -0.02, 0.03])
    shared = MeshCaster(world.vertices, world.faces)
    rays = pixel_rays(K, W, H).reshape(-1, 3)
    down = np.array([0.0, 0.0, -1.0])
    for angle, translation in ((0.3, [0.0, 0.01, 0.6]), (-1.1, [-0.02, 0.0, 0.45])):
        rotation = trimesh.transformations.rotation_matrix(angle, [0.3, 1.0, 0.2])[:3, :3]
        vertices = world.vertices @ rotation.T + translation  # world → camera
        to_world = (rotation.T, -rotation.T @ np.asarray(translation))
        cached = MeshCaster(vertices, world.faces, shared, to_world)
        hits = cached.first_hits(K, W, H)
        fresh_world = RayMeshIntersector(trimesh.Trimesh(world.vertices, world.faces, process=False))
        origins = np.broadcast_to(to_world[1], rays.shape)
        expected = fresh_world.intersects_first(origins, rays @ rotation).reshape(H, W)
        np.testing.assert_array_equal(hits.face, expected)
        hit = expected >= 0
        assert hit.sum() > 500
        camera_frame = MeshCaster(vertices, world.faces).first_hits(K, W, H)
        np.testing.assert_array_equal(camera_frame.face >= 0, hit)
        assert (camera_frame.face[hit] == hits.face[hit]).mean() > 0.99
        np.testing.assert_allclose(hits.points[hit], camera_frame.points[hit], atol=1e-6)
        # shadow rays from points behind the sphere, all along -z: some blocked, some not
        behind = rays[::7] * 0.8
        blocked = cached.blocked(behind, down)
        assert 100 < blocked.sum() < len(behind) - 100
        world_origins, world_down = behind @ rotation + to_world[1], np.broadcast_to(down @ rotation, behind.shape)
        np.testing.assert_array_equal(blocked, fresh_world.intersects_any(world_origins, world_down))
