"""Are the labels' sigmas honest? Coverage, the reliability plot, and the calibration fit.

A calibrated 1-sigma interval holds about 68 % of errors and a 2-sigma one 95 %
(``metrics.reliability`` counts them). ``fit_scale`` finds the factor by which a set of sigmas
must be multiplied to hold a target share on one clip; ``cross_check`` applies the factor fitted
on one clip to another, which is how ``labels.uncertainty.CALIBRATION`` was chosen
(``bench/uncertainty.py``, docs/models.md "Body size and uncertainty").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ONE_SIGMA = math.erf(1 / math.sqrt(2))  # 0.6827
TWO_SIGMA = math.erf(2 / math.sqrt(2))  # 0.9545


def normalised(errors: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """|error| / sigma where both are finite and sigma > 0."""
    e, s = np.asarray(errors, np.float64), np.asarray(sigmas, np.float64)
    ok = np.isfinite(e) & np.isfinite(s) & (s > 0)
    return np.abs(e[ok]) / s[ok]


def coverage(errors: np.ndarray, sigmas: np.ndarray, k: float = 1.0) -> float:
    """Share of |errors| within k sigma (NaN when there is none)."""
    z = normalised(errors, sigmas)
    return float((z <= k).mean()) if len(z) else math.nan


def fit_scale(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """The factor c for which ``c * sigmas`` holds 68.3 % and 95.4 % of the errors as nearly as one
    factor can: the c minimising the squared misses of both shares (the 68 % quantile of
    |error| / sigma alone would leave the 2-sigma share to the tails)."""
    z = np.sort(normalised(errors, sigmas))
    if not len(z):
        return math.nan
    lo, hi = np.quantile(z, ONE_SIGMA) / 2, np.quantile(z, TWO_SIGMA)
    grid = np.exp(np.linspace(math.log(max(lo, 1e-9)), math.log(max(hi, 2e-9)), 400))
    miss = [((np.searchsorted(z, c, "right") / len(z)) - ONE_SIGMA) ** 2
            + ((np.searchsorted(z, 2 * c, "right") / len(z)) - TWO_SIGMA) ** 2 for c in grid]
    return float(grid[int(np.argmin(miss))])


def cross_check(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Fit on each clip, check on every other: ``data`` maps a clip to (errors, sigmas). Returns
    per fitted clip: the factor, and per checked clip the 1- and 2-sigma coverage with it."""
    out = {}
    for fit_on, (e, s) in data.items():
        c = fit_scale(e, s)
        out[fit_on] = {"scale": round(c, 4), "checked": {
            other: {"within_1_sigma": round(coverage(e2, c * s2, 1.0), 3),
                    "within_2_sigma": round(coverage(e2, c * s2, 2.0), 3), "n": int(len(normalised(e2, s2)))}
            for other, (e2, s2) in data.items()}}
    return out


def plot_reliability(curve: dict, path: str | Path, title: str = "") -> Path:
    """The reliability plot of ``metrics.reliability``'s curve: observed share within k sigma
    against what a Gaussian gives, for the root depth and the joints; the diagonal is honest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    expected = curve["gaussian_1d"]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    for key, label, colour in (("depth", "root depth", "C0"), ("joints", "joints (3D distance)", "C1")):
        observed = curve.get(key)
        if observed and any(v is not None for v in observed):
            n = curve.get(f"{key}_n", "")
            ax.plot(expected, [math.nan if v is None else v for v in observed], marker="o", color=colour,
                    label=f"{label} (n={n})")
    for x, k in zip(expected, curve["k"], strict=True):
        if k > 2:
            continue  # 2.5 and 3 sigma crowd the corner
        ax.annotate(f"{k:g}σ", (x, 0.02), fontsize=7, ha="center", color="0.4")
    ax.set_xlabel("expected share within k sigma (Gaussian)")
    ax.set_ylabel("observed share")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "reliability of the sigmas", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ fitting the calibration
@dataclass
class Observations:
    """Scored predictions flattened for fitting ``labels.uncertainty.Calibration``: per joint
    observation [N] its kind (index into ``KINDS``), the person's quality, the augmentations'
    spread, the size term, the error (3D distance, mm) and whether the floor took part; per person
    [P] the root depth error, the size and spread terms of its sigma, and whether the floor took
    part."""

    kind: np.ndarray
    quality: np.ndarray
    spread: np.ndarray
    size_term: np.ndarray  # |offset| x the size sigma as body_size gives it (mm)
    error: np.ndarray
    joint_grounded: np.ndarray
    depth_error: np.ndarray
    depth_size: np.ndarray  # [P] depth x the size sigma as body_size gives it (mm)
    depth_spread: np.ndarray  # [P] mm, 0 with one augmentation
    grounded: np.ndarray


def observations(people: list[dict]) -> Observations:
    """``people``: dicts with ``names`` [J], ``rel`` [J,3] (the prediction, root-relative as the
    pipeline makes it), ``valid`` [J] (joints scored), ``joint_errors`` [valid], ``quality``,
    ``log_size_sigma``, ``joint_spread`` [J] or None, ``depth_error``, ``depth_mm``,
    ``depth_spread`` or None, ``grounded``."""
    from annotator.labels import uncertainty as u

    cols: dict[str, list] = {f: [] for f in ("kind", "quality", "spread", "size_term", "error", "joint_grounded")}
    depth_error, depth_size, depth_spread, grounded = [], [], [], []
    for p in people:
        valid = np.asarray(p["valid"], bool)
        kinds = np.array([u.KINDS.index(u.joint_kind(n)) for n in p["names"]])[valid]
        n = int(valid.sum())
        cols["kind"].append(kinds)
        cols["quality"].append(np.full(n, p["quality"]))
        spread = np.zeros(len(valid)) if p["joint_spread"] is None else np.asarray(p["joint_spread"], np.float64)
        cols["spread"].append(spread[valid])
        cols["size_term"].append(np.linalg.norm(np.asarray(p["rel"], np.float64), axis=-1)[valid] * p["log_size_sigma"])
        cols["error"].append(np.asarray(p["joint_errors"], np.float64))
        cols["joint_grounded"].append(np.full(n, bool(p["grounded"])))
        depth_error.append(p["depth_error"])
        depth_size.append(abs(p["depth_mm"]) * p["log_size_sigma"])
        depth_spread.append(p["depth_spread"] or 0.0)
        grounded.append(bool(p["grounded"]))
    return Observations(*(np.concatenate(cols[f]) if cols[f] else np.zeros(0) for f in cols),
                        np.array(depth_error, np.float64), np.array(depth_size, np.float64),
                        np.array(depth_spread, np.float64), np.array(grounded, bool))


def joint_sigmas(obs: Observations, calibration) -> np.ndarray:
    """[N] each observation's joint sigma under ``calibration`` (``labels.uncertainty.joint_sigma``'s formula)."""
    q = np.clip(np.nan_to_num(obs.quality, nan=0.5), 0.05, 1.0)
    base = np.asarray(calibration.joint_base_mm, np.float64)[obs.kind] / q ** calibration.quality_power
    size = obs.size_term * np.where(obs.joint_grounded, calibration.size_scale_floor, calibration.size_scale)
    return np.sqrt(base ** 2 + (calibration.spread_weight * obs.spread) ** 2 + size ** 2)


def depth_sigmas(obs: Observations, calibration) -> np.ndarray:
    """[P] each person's depth sigma under ``calibration`` (``labels.uncertainty.depth_sigma``'s formula)."""
    size = obs.depth_size * np.where(obs.grounded, calibration.size_scale_floor, calibration.size_scale)
    return np.sqrt(size ** 2 + obs.depth_spread ** 2 + calibration.depth_base_mm ** 2)


def fit(obs: Observations, start=None, quality_powers=tuple(np.arange(0.0, 4.01, 0.5)),
        spread_weights=(0.0, 0.5, 1.0), depth_bases_mm=(30.0, 60.0, 90.0)):
    """The calibration that makes the sigmas hold on ``obs``. First the size: for each depth base,
    the factors on the size sigma (monocular, floor) whose depth sigmas hold best at 1 and 2 sigma.
    Then the joints, with that size term: for each quality power and spread weight, each kind of
    joint's base so that 68.3 % of its errors lie within 1 sigma; the pair whose sigmas hold best
    at 1 and 2 sigma in each third of the quality range, with and without the floor, and with and
    without augmentations."""
    import dataclasses

    from annotator.labels import uncertainty as u

    start = start or u.Calibration()
    factors = np.exp(np.linspace(math.log(0.2), math.log(8.0), 160))
    best, best_miss = start, math.inf
    for base in depth_bases_mm:
        cal, miss = dataclasses.replace(start, depth_base_mm=float(base)), 0.0
        for name, sel in (("size_scale", ~obs.grounded), ("size_scale_floor", obs.grounded)):
            if not sel.any():
                continue
            sub = _people(obs, sel)
            misses = [_miss(sub.depth_error, depth_sigmas(sub, dataclasses.replace(cal, **{name: float(f)})))
                      for f in factors]
            cal = dataclasses.replace(cal, **{name: round(float(factors[int(np.argmin(misses))]), 3)})
            miss += min(misses)
        if miss < best_miss:
            best, best_miss = cal, miss
    thirds = np.quantile(obs.quality, [1 / 3, 2 / 3]) if len(obs.quality) else np.zeros(2)
    parts = [np.digitize(obs.quality, thirds) == t for t in range(3)]
    parts += [obs.spread > 0, obs.spread == 0, obs.joint_grounded, ~obs.joint_grounded]
    joints_best, joints_miss = best, math.inf
    for power in quality_powers:
        for weight in spread_weights:
            cal = dataclasses.replace(best, quality_power=float(power), spread_weight=float(weight))
            cal = dataclasses.replace(cal, joint_base_mm=tuple(_kind_base(obs, cal, k) for k in range(len(u.KINDS))))
            sig = joint_sigmas(obs, cal)
            miss = sum(_miss(obs.error[p], sig[p]) for p in parts if p.any())
            if miss < joints_miss:
                joints_best, joints_miss = cal, miss
    return joints_best


def _miss(errors: np.ndarray, sigmas: np.ndarray) -> float:
    return (coverage(errors, sigmas, 1.0) - ONE_SIGMA) ** 2 + (coverage(errors, sigmas, 2.0) - TWO_SIGMA) ** 2


def _kind_base(obs: Observations, cal, kind: int) -> float:
    """The base (mm) for joints of ``kind`` that puts 68.3 % of their errors within 1 sigma."""
    import dataclasses

    sel = obs.kind == kind
    if not sel.any():
        return cal.joint_base_mm[kind]
    sub = _subset(obs, sel)
    lo, hi = 1.0, 2000.0
    for _ in range(50):  # coverage grows with the base: bisection in log space
        mid = math.sqrt(lo * hi)
        trial = dataclasses.replace(cal, joint_base_mm=tuple(mid if i == kind else 1.0 for i in range(4)))
        if coverage(sub.error, joint_sigmas(sub, trial), 1.0) < ONE_SIGMA:
            lo = mid
        else:
            hi = mid
    return round(math.sqrt(lo * hi), 1)


def _subset(obs: Observations, sel: np.ndarray) -> Observations:
    """The joint observations ``sel`` (people unchanged)."""
    joint = ("kind", "quality", "spread", "size_term", "error", "joint_grounded")
    return Observations(*(getattr(obs, f)[sel] if f in joint else getattr(obs, f)
                          for f in Observations.__dataclass_fields__))


def _people(obs: Observations, sel: np.ndarray) -> Observations:
    """The people ``sel`` (joint observations unchanged)."""
    people = ("depth_error", "depth_size", "depth_spread", "grounded")
    return Observations(*(getattr(obs, f)[sel] if f in people else getattr(obs, f)
                          for f in Observations.__dataclass_fields__))


def holds(obs: Observations, calibration) -> dict:
    """Coverage at 1 and 2 sigma of the joints, the monocular and the grounded depths under ``calibration``."""
    j, d = joint_sigmas(obs, calibration), depth_sigmas(obs, calibration)
    out = {"joints_within_1_sigma": coverage(obs.error, j, 1.0), "joints_within_2_sigma": coverage(obs.error, j, 2.0),
           "joints_n": int(len(obs.error))}
    for name, sel in (("depth_monocular", ~obs.grounded), ("depth_grounded", obs.grounded)):
        out[f"{name}_within_1_sigma"] = coverage(obs.depth_error[sel], d[sel], 1.0)
        out[f"{name}_within_2_sigma"] = coverage(obs.depth_error[sel], d[sel], 2.0)
        out[f"{name}_n"] = int(sel.sum())
    out["depth_within_1_sigma"] = coverage(obs.depth_error, d, 1.0)
    out["depth_within_2_sigma"] = coverage(obs.depth_error, d, 2.0)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}
