"""Rig fusion: one 3D person per instant from several calibrated, synchronised views.

Input per view: the monocular labels of one instant (each person's 2D joints as undistorted
normalised rays, joint confidences, and the monocular 3D in the shared world frame, mm). Output:
one ``FusedPerson`` per person seen by two views or more: joints in world mm, the views whose 2D
each joint uses, the reprojection error, a per-joint sigma and a quality, both from how well the
views agree. Pure numpy (the driver and the evaluation call it; no TensorFlow).

Steps:

1. **Association** (``associate``). Two detections in different views are candidates for one
   person when the median symmetric epipolar distance of their confident joints is under
   ``association_px`` (labels as given or left/right exchanged, since monocular models swap the
   sides of people seen from behind) *and* their monocular 3D centroids are within
   ``association_mm``. Whether b's left/right labels are exchanged relative to a's is voted by
   both the epipolar distance and the monocular shapes (median joint distance about the centroids,
   over ``flip_shape_mm``): epipolar lines that run along the body's left-right axis (cameras at
   one height) cannot tell a swap, the 3D shapes can (a swap moves shoulders and hips by their
   width). Cost: the sum of the distances, each over its scale. Candidates are merged greedily,
   best first, at most one detection per view; each member keeps whether its labels must be
   exchanged to agree with the others.
2. **Robust triangulation per joint** (``ransac_joint``): every pair of confident observations
   is triangulated (confidence-weighted DLT), the pair whose point most observations reproject
   within ``inlier_px`` of wins (sum of confidences), and the point is solved again from those
   inliers; outlier views are dropped for that joint. A joint no two views agree on has no
   triangulation.
3. **Monocular prior.** Each member view's monocular 3D gives bone vectors (the skeleton's edges,
   in the world frame): the body's shape where the views' 2D leaves it open (a joint seen by fewer
   than two views; the depth along the baseline of two cameras facing each other).
4. **Joint fit** (``fit``): all joints at once by Gauss-Newton on (a) every confident
   observation's reprojection residual, expressed in mm at the person's depth, sigma
   ``ray_sigma_mm``, weighted by confidence, and (b) every member view's bone vectors, sigma
   ``bone_sigma_mm``; both robust (Cauchy at ``robust_sigmas`` sigmas, iteratively reweighted),
   started from step 2 (joints without a triangulation: the mean monocular shape placed on the
   triangulated joints).
5. **Chirality.** If the fused body is a mirror image (left x up points backwards from the face),
   every view exchanged left and right: the labels are exchanged back.
6. **Uncertainty.** Per joint: the posterior standard deviation of the fit (the inverse of its
   normal matrix), scaled up by the joint's reprojection residuals over their sigma when the views
   disagree more than their noise; ``quality`` = exp(-median sigma / ``quality_scale_mm``).

Sigmas are properties of the monocular model, in mm at the person (independent of the image size
and distance): the 2D noise of a crop model scales with the crop, i.e. with the person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotator.labels import multiview_geometry as geo


@dataclass(frozen=True)
class FusionConfig:
    min_confidence: float = 0.5  # observations below take no part
    association_px: float = 60.0  # max median epipolar distance of one person in two views
    association_mm: float = 1000.0  # max distance of one person's monocular centroids in two views
    flip_shape_mm: float = 200.0  # scale of the monocular shapes' disagreement in the left/right vote
    inlier_px: float = 40.0  # an observation reprojecting further is an outlier of its joint
    ray_sigma_mm: float = 25.0  # 2D noise of one observation, at the person (mm)
    bone_sigma_mm: float = 40.0  # error of one view's monocular bone vector (mm)
    robust_sigmas: float = 3.0  # Cauchy scale of the robust fit, in sigmas
    iterations: int = 10
    min_joints: int = 4  # joints two detections must share to be associated
    quality_scale_mm: float = 50.0


@dataclass(frozen=True)
class RigSkeleton:
    """What fusion needs of a skeleton: names (for the chirality check), edges, each joint's
    left/right counterpart."""

    names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    mirror: tuple[int, ...]

    @classmethod
    def of(cls, names, edges) -> RigSkeleton:
        from annotator.estimator import skeletons

        names = tuple(names)
        mirror = skeletons.mirror_indices(skeletons.Skeleton("rig", names, ()))
        return cls(names, tuple((int(a), int(b)) for a, b in edges), tuple(mirror))


@dataclass
class ViewPeople:
    """The monocular labels of one view at one instant (K people, J joints)."""

    rays: np.ndarray  # [K,J,2] undistorted normalised image coordinates
    conf: np.ndarray  # [K,J]
    poses3d: np.ndarray  # [K,J,3] world mm

    def __len__(self) -> int:
        return len(self.rays)


@dataclass
class FusedPerson:
    joints: np.ndarray  # [J,3] world mm
    view_mask: np.ndarray  # [V,J] bool: the views whose 2D the joint uses (V: all views of the rig)
    reprojection_px: np.ndarray  # [J] median over the views used (NaN: none)
    sigma_mm: np.ndarray  # [J]
    quality: float
    members: dict[int, int]  # view -> detection index
    flipped: dict[int, bool] = field(default_factory=dict)  # view -> its left/right labels exchanged

    @property
    def views_used(self) -> np.ndarray:
        return self.view_mask.sum(0)


def centroid(pose: np.ndarray) -> np.ndarray:
    return np.nanmean(pose, axis=0)


def associate(people: list[ViewPeople], cameras: list, mirror,
              config: FusionConfig) -> list[dict[int, tuple[int, bool]]]:
    """Clusters {view: (detection, flipped)} of one person across views (step 1)."""
    pairs = []
    mirror = list(mirror)
    for va in range(len(people)):
        for vb in range(va + 1, len(people)):
            a, b = people[va], people[vb]
            for i in range(len(a)):
                for j in range(len(b)):
                    mm = float(np.linalg.norm(centroid(a.poses3d[i]) - centroid(b.poses3d[j])))
                    if not mm < config.association_mm:
                        continue
                    px = geo.epipolar_costs(a.rays[i], a.conf[i], b.rays[j], b.conf[j], cameras[va], cameras[vb],
                                            config.min_confidence, mirror, config.min_joints)
                    # which labels of b are a's: epipolar geometry and the monocular shapes both vote
                    # (epipolar lines along the left-right axis, e.g. cameras at one height, cannot tell)
                    cost = [px[k] / config.association_px + shape_distance(a.poses3d[i], b.poses3d[j][order])
                            / config.flip_shape_mm for k, order in enumerate((slice(None), mirror))]
                    flip = cost[1] < cost[0]
                    if px[int(flip)] < config.association_px:
                        pairs.append((cost[int(flip)] + mm / config.association_mm, va, i, vb, j, flip))
    return geo.merge_pairs(pairs)


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Median distance (mm) of two poses' joints [J,3] about their centroids."""
    d = np.linalg.norm((a - centroid(a)) - (b - centroid(b)), axis=-1)
    return float(np.nanmedian(d)) if np.isfinite(d).any() else 0.0


def ransac_joint(rays: np.ndarray, conf: np.ndarray, projections: np.ndarray, focal: np.ndarray,
                 inlier_px: float) -> tuple[np.ndarray | None, np.ndarray]:
    """One joint from its observations (rays [N,2], conf [N], projections [N,3,4], focal [N]):
    the point and the inlier mask [N] (step 2); (None, no inliers) when no two agree."""
    n = len(rays)
    point = geo.triangulate(rays, projections, conf)
    if (_reprojection_px(point, rays, projections, focal) < inlier_px).all():  # all agree: no search
        return point, np.ones(n, bool)
    best, best_score = None, (0.0, 0.0)
    for a in range(n):
        for b in range(a + 1, n):
            pick = np.array([a, b])
            point = geo.triangulate(rays[pick], projections[pick], conf[pick])
            err = _reprojection_px(point, rays, projections, focal)
            inliers = err < inlier_px
            if inliers.sum() < 2:
                continue
            score = (float(conf[inliers].sum()), -float(err[inliers].sum()))
            if score > best_score:
                best, best_score = inliers, score
    if best is None:
        return None, np.zeros(n, bool)
    for _ in range(2):  # refit on the inliers, then take the inliers of the refit
        point = geo.triangulate(rays[best], projections[best], conf[best])
        inliers = _reprojection_px(point, rays, projections, focal) < inlier_px
        if inliers.sum() < 2 or (inliers == best).all():
            break
        best = inliers
    return point, best


def _reprojection_px(point: np.ndarray, rays: np.ndarray, projections: np.ndarray, focal: np.ndarray) -> np.ndarray:
    pc = projections[:, :, :3] @ point + projections[:, :, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(pc[:, :2] / pc[:, 2:] - rays, axis=1) * focal
    return np.where(pc[:, 2] > 0, err, np.inf)


def fuse(people: list[ViewPeople], cameras: list, skeleton: RigSkeleton,
         config: FusionConfig | None = None) -> list[FusedPerson]:
    """Every person two views or more see at this instant (steps 1-6)."""
    config = config or FusionConfig()
    out = []
    for cluster in associate(people, cameras, skeleton.mirror, config):
        person = fuse_person(cluster, people, cameras, skeleton, config)
        if person is not None:
            out.append(person)
    return out


def fuse_person(cluster: dict[int, tuple[int, bool]], people: list[ViewPeople], cameras: list,
                skeleton: RigSkeleton, config: FusionConfig) -> FusedPerson | None:
    """One associated person (steps 2-6); None when no joint is triangulated."""
    mirror = np.asarray(skeleton.mirror)
    views = sorted(cluster)
    rays, conf, mono = [], [], []
    for v in views:
        det, flip = cluster[v]
        order = mirror if flip else np.arange(len(mirror))
        rays.append(people[v].rays[det][order])
        conf.append(people[v].conf[det][order])
        mono.append(people[v].poses3d[det][order])
    rays, conf, mono = np.asarray(rays, np.float64), np.asarray(conf, np.float64), np.asarray(mono, np.float64)
    proj = np.stack([geo.projection(cameras[v]) for v in views])
    focal = np.array([geo.focal_px(cameras[v]) for v in views])
    n_joints = rays.shape[1]
    tri = np.full((n_joints, 3), np.nan)
    for j in range(n_joints):
        seen = np.flatnonzero(conf[:, j] > config.min_confidence)
        if len(seen) >= 2:
            point, _ = ransac_joint(rays[seen, j], conf[seen, j], proj[seen], focal[seen], config.inlier_px)
            if point is not None:
                tri[j] = point
    if not np.isfinite(tri[:, 0]).any():
        return None
    joints, sigma, residual_px = fit(tri, rays, conf, mono, proj, focal, skeleton.edges, config)
    flipped = {v: cluster[v][1] for v in views}
    if chirality(joints, skeleton.names) < 0:  # every view exchanged left and right
        joints, sigma, residual_px, conf = joints[mirror], sigma[mirror], residual_px[:, mirror], conf[:, mirror]
        flipped = {v: not f for v, f in flipped.items()}
    used = (residual_px < config.inlier_px) & (conf > config.min_confidence)
    mask = np.zeros((len(people), n_joints), bool)
    mask[views] = used
    reproj = np.array([np.median(residual_px[used[:, j], j]) if used[:, j].any() else np.nan
                       for j in range(n_joints)])
    quality = float(np.exp(-np.median(sigma) / config.quality_scale_mm))
    return FusedPerson(joints, mask, reproj, sigma, quality, {v: cluster[v][0] for v in views}, flipped)


def fit(tri: np.ndarray, rays: np.ndarray, conf: np.ndarray, mono: np.ndarray, proj: np.ndarray, focal: np.ndarray,
        edges, config: FusionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4 and 6: joints [J,3], sigma [J] (mm), reprojection residuals [V,J] (px; inf where not
    observed) of the robust joint fit of rays [V,J,2] and monocular bones (mono [V,J,3])."""
    n_views, n_joints = conf.shape
    shape = mono - np.nanmean(mono, axis=1, keepdims=True)
    shape = np.nanmean(shape, axis=0)  # the views' mean monocular shape about its centroid
    ok = np.isfinite(tri[:, 0])
    x = np.where(ok[:, None], tri, shape + np.median(tri[ok] - shape[ok], axis=0))
    observed = conf > config.min_confidence
    edges = np.asarray(edges, int).reshape(-1, 2)
    bones = mono[:, edges[:, 1]] - mono[:, edges[:, 0]]  # [V,E,3]
    c_ray, c_bone = config.robust_sigmas * config.ray_sigma_mm, config.robust_sigmas * config.bone_sigma_mm
    rot, trans = proj[:, :, :3], proj[:, :, 3]
    hessian = np.eye(3 * n_joints) * 1e-9
    for _ in range(config.iterations):
        pc = np.einsum("vab,jb->vja", rot, x) + trans[:, None]  # [V,J,3]
        z = np.maximum(pc[..., 2], 1e-3)
        p = pc[..., :2] / z[..., None]
        r = (p - rays) * z[..., None]  # mm at the person
        # d r / d X = z d p / d X = [[1, 0, -px], [0, 1, -py]] R
        jac = np.einsum("vjab,vbc->vjac", _dproj(p), rot)  # [V,J,2,3]
        # where views agree on a joint (it was triangulated), one that reprojects beyond inlier_px is dropped
        far = ok[None] & (np.linalg.norm(p - rays, axis=-1) * focal[:, None] > config.inlier_px)
        w = np.where(observed & ~far, conf / (1 + (np.linalg.norm(r, axis=-1) / c_ray) ** 2), 0.0)
        w = w / config.ray_sigma_mm ** 2
        blocks = np.zeros((n_joints, 3, n_joints, 3))
        blocks[np.arange(n_joints), :, np.arange(n_joints), :] = np.einsum("vj,vjab,vjac->jbc", w, jac, jac)
        grad = np.einsum("vj,vjab,vja->jb", w, jac, r)
        rb = (x[edges[:, 1]] - x[edges[:, 0]])[None] - bones  # [V,E,3]
        wb = np.where(np.isfinite(rb[..., 0]), 1 / (1 + (np.linalg.norm(np.nan_to_num(rb), axis=-1) / c_bone) ** 2),
                      0.0) / config.bone_sigma_mm ** 2
        gb = (wb[..., None] * np.nan_to_num(rb)).sum(0)  # [E,3]
        np.add.at(grad, edges[:, 1], gb)
        np.add.at(grad, edges[:, 0], -gb)
        laplacian = np.zeros((n_joints, n_joints))  # the bones' normal matrix: isotropic, a weighted graph Laplacian
        we = wb.sum(0)
        for a, b, sign in ((0, 0, 1), (1, 1, 1), (0, 1, -1), (1, 0, -1)):
            np.add.at(laplacian, (edges[:, a], edges[:, b]), sign * we)
        hessian = blocks.reshape(3 * n_joints, 3 * n_joints) + np.kron(laplacian, np.eye(3))
        hessian += np.eye(3 * n_joints) * 1e-9
        grad = grad.ravel()
        step = np.linalg.solve(hessian, -grad).reshape(n_joints, 3)
        x = x + step
        if np.abs(step).max() < 0.05:
            break
    pc = np.einsum("vab,jb->vja", rot, x) + trans[:, None]
    residual_px = np.linalg.norm(pc[..., :2] / np.maximum(pc[..., 2:], 1e-3) - rays, axis=-1) * focal[:, None]
    residual_px = np.where(observed & (pc[..., 2] > 0), residual_px, np.inf)
    cov = np.linalg.inv(hessian)
    sigma = np.sqrt(np.einsum("jaja->j", cov.reshape(n_joints, 3, n_joints, 3)) / 3)
    # views that disagree beyond their noise widen the joint's sigma (their residual RMS in sigmas)
    r_mm = np.where(np.isfinite(residual_px), residual_px * np.maximum(pc[..., 2], 1e-3) / focal[:, None], np.nan)
    inlier = np.isfinite(r_mm) & (residual_px < config.inlier_px)
    chi = np.array([np.sqrt(np.mean((r_mm[inlier[:, j], j] / config.ray_sigma_mm) ** 2) / 2)
                    if inlier[:, j].sum() >= 2 else 1.0 for j in range(n_joints)])
    return x, sigma * np.maximum(chi, 1.0), residual_px


def _dproj(p: np.ndarray) -> np.ndarray:
    out = np.zeros(p.shape[:-1] + (2, 3))
    out[..., 0, 0] = 1
    out[..., 1, 1] = 1
    out[..., 0, 2] = -p[..., 0]
    out[..., 1, 2] = -p[..., 1]
    return out


_CHIRALITY = {"left": ("left_shoulder", "lsho", "left_hip", "lhip"),
              "right": ("right_shoulder", "rsho", "right_hip", "rhip"),
              "up": ("left_shoulder", "lsho", "right_shoulder", "rsho"),
              "down": ("left_hip", "lhip", "right_hip", "rhip"),
              "nose": ("nose",), "ears": ("left_ear", "lear", "right_ear", "rear")}


def chirality(joints: np.ndarray, names) -> float:
    """(left x up) . forward of a body (positive for a real one, negative for a mirror image;
    0 when the joints to tell are missing): left from the right to the left shoulders and hips,
    up from the hips to the shoulders, forward from the ears to the nose."""
    index = {n: i for i, n in enumerate(names)}
    mean = {}
    for key, wanted in _CHIRALITY.items():
        idx = [index[n] for n in wanted if n in index]
        if not idx or not np.isfinite(joints[idx]).all():
            return 0.0
        mean[key] = joints[idx].mean(0)
    left = mean["left"] - mean["right"]
    up = mean["up"] - mean["down"]
    forward = mean["nose"] - mean["ears"]
    return float(np.cross(left, up) @ forward)
