"""Temporal filters for per-frame signals with gaps and per-observation weights: the three
established kinds the temporal step was measured with (docs/models.md, "Temporal labels").

All take ``t`` [N] (frame positions, increasing, gaps allowed), ``y`` [N, C] and optional weights
``w`` [N, C] (0 = missing, e.g. a joint the model was unsure of; larger = more trusted) and return
the smoothed [N, C].

* ``rts``: a constant-velocity Kalman filter and Rauch-Tung-Striebel smoother per channel. Its two
  noise levels are not set by hand: the ratio of process to measurement noise is the maximum-
  likelihood one (innovations likelihood, measurement noise concentrated out) on a log grid,
  shared by the channels of a group (e.g. the three axes of a joint), so it adapts to the signal's
  own noise and frame rate. This is the default.
* ``savgol``: Savitzky-Golay, a local weighted polynomial fit in a window of ``window`` frames.
* ``one_euro``: the 1-euro filter (Casiez et al. 2012), causal, with MediaPipe's pose-landmark
  settings in units of the person's size.
"""

from __future__ import annotations

import numpy as np

METHODS = ("rts", "savgol", "one_euro", "none")
RHO_GRID = np.logspace(-5, 2, 29)  # process / measurement noise ratio (per frame^3)
_VEL_PRIOR = 1e4  # initial velocity variance, in units of the measurement noise


def _kalman(t: np.ndarray, y: np.ndarray, w: np.ndarray, rho: np.ndarray, keep: bool = False):
    """Constant-velocity Kalman filter with measurement noise 1/w and process noise rho, vectorised
    over the trailing axes of ``rho`` (broadcast against channels). Returns the innovation sums
    (sum nu^2/S, sum log S, count) and, with ``keep``, the filtered and predicted moments."""
    n = len(t)
    shape = np.broadcast_shapes(rho.shape, y.shape[1:])
    x0 = np.broadcast_to(y[0], shape).astype(np.float64).copy()
    x1 = np.zeros(shape)
    r0 = np.where(w[0] > 0, 1.0 / np.maximum(w[0], 1e-12), 1e12)
    p00 = np.broadcast_to(r0, shape).astype(np.float64).copy()
    p01 = np.zeros(shape)
    p11 = np.full(shape, _VEL_PRIOR)
    x0 = np.where(w[0] > 0, x0, 0.0)
    chi = np.zeros(shape)
    logs = np.zeros(shape)
    count = np.zeros(shape)
    store = [] if keep else None
    if keep:
        store.append((x0.copy(), x1.copy(), p00.copy(), p01.copy(), p11.copy(), None))
    for i in range(1, n):
        dt = float(t[i] - t[i - 1])
        # predict
        px0 = x0 + dt * x1
        px1 = x1
        q00, q01, q11 = rho * dt ** 3 / 3, rho * dt ** 2 / 2, rho * dt
        pp00 = p00 + 2 * dt * p01 + dt * dt * p11 + q00
        pp01 = p01 + dt * p11 + q01
        pp11 = p11 + q11
        # update (skipped where the channel is missing)
        seen = w[i] > 0
        r = 1.0 / np.maximum(w[i], 1e-12)
        s = pp00 + r
        nu = y[i] - px0
        k0, k1 = pp00 / s, pp01 / s
        x0 = np.where(seen, px0 + k0 * nu, px0)
        x1 = np.where(seen, px1 + k1 * nu, px1)
        p00 = np.where(seen, (1 - k0) * pp00, pp00)
        p01 = np.where(seen, (1 - k0) * pp01, pp01)
        p11 = np.where(seen, pp11 - k1 * pp01, pp11)
        chi += np.where(seen, nu * nu / s, 0.0)
        logs += np.where(seen, np.log(s), 0.0)
        count += seen
        if keep:
            store.append((x0.copy(), x1.copy(), p00.copy(), p01.copy(), p11.copy(), (px0, px1, pp00, pp01, pp11)))
    return chi, logs, count, store


def rts(t: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Kalman + RTS smoothing with the maximum-likelihood noise ratio per group of channels
    (``groups`` [C] ints; default: each channel its own group)."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    n, c = y.shape
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    w = np.where(np.isfinite(y), w, 0.0)
    y = np.where(w > 0, y, 0.0)
    if n < 3:
        return y
    groups = np.arange(c) if groups is None else np.asarray(groups)
    chi, logs, count, _ = _kalman(t, y, w, RHO_GRID[:, None])  # [G, C]
    r_hat = chi / np.maximum(count, 1)
    ll = -0.5 * (logs + count * (np.log(np.maximum(r_hat, 1e-12)) + 1.0))  # concentrated log-likelihood
    rho = np.empty(c)
    for g in np.unique(groups):
        cols = groups == g
        rho[cols] = RHO_GRID[int(np.argmax(ll[:, cols].sum(axis=1)))]
    _, _, _, store = _kalman(t, y, w, rho, keep=True)
    xs0, xs1 = store[-1][0], store[-1][1]
    out = np.empty_like(y)
    out[-1] = xs0
    for i in range(n - 2, -1, -1):
        f0, f1, p00, p01, p11, _ = store[i]
        px0, px1, pp00, pp01, pp11 = store[i + 1][5]
        dt = float(t[i + 1] - t[i])
        # C = P_f F^T P_pred^-1 (2x2, closed form)
        a00, a01 = p00 + dt * p01, p01
        a10, a11 = p01 + dt * p11, p11
        det = pp00 * pp11 - pp01 * pp01
        det = np.where(np.abs(det) < 1e-300, 1e-300, det)
        i00, i01, i11 = pp11 / det, -pp01 / det, pp00 / det
        c00, c01 = a00 * i00 + a01 * i01, a00 * i01 + a01 * i11
        c10, c11 = a10 * i00 + a11 * i01, a10 * i01 + a11 * i11
        d0, d1 = xs0 - px0, xs1 - px1
        xs0, xs1 = f0 + c00 * d0 + c01 * d1, f1 + c10 * d0 + c11 * d1
        out[i] = xs0
    return out


def savgol(t: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, window: int = 13, order: int = 2) -> np.ndarray:
    """Savitzky-Golay on irregular frames: at each frame, the weighted least-squares polynomial of
    degree ``order`` through the observations within +-window//2 frames, evaluated there."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    w = np.where(np.isfinite(y), w, 0.0)
    y = np.where(w > 0, y, 0.0)
    half = window // 2
    out = y.copy()
    for i in range(len(t)):
        near = np.abs(t - t[i]) <= half
        dt = t[near] - t[i]
        deg = min(order, int(near.sum()) - 1)
        if deg < 1:
            continue
        a = np.vander(dt, deg + 1, increasing=True)  # [M, D]
        ww = w[near]  # [M, C]
        ata = np.einsum("md,mc,me->cde", a, ww, a) + 1e-9 * np.eye(deg + 1)
        aty = np.einsum("md,mc,mc->cd", a, ww, y[near])
        coef = np.linalg.solve(ata, aty[..., None])[..., 0]
        fit = coef[:, 0]
        out[i] = np.where(ww.sum(0) > 0, fit, y[i])
    return out


def one_euro(t: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, fps: float = 30.0, scale: float = 1.0,
             min_cutoff: float = 0.05, beta: float = 80.0, d_cutoff: float = 1.0) -> np.ndarray:
    """The 1-euro filter, causal. Defaults are MediaPipe's pose-landmark smoothing (min_cutoff
    0.05 Hz, beta 80, derivative cutoff 1 Hz) on values divided by ``scale`` (the person's size)."""
    t = np.asarray(t, np.float64) / fps
    y = np.asarray(y, np.float64) / scale
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    seen = (w > 0) & np.isfinite(y)

    def alpha(cutoff, dt):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out = np.where(seen, y, 0.0).copy()
    x = np.where(seen[0], y[0], np.nan)
    dx = np.zeros(y.shape[1])
    for i in range(1, len(t)):
        dt = max(t[i] - t[i - 1], 1e-6)
        new = seen[i] & np.isfinite(x)
        raw_dx = np.where(new, (y[i] - np.nan_to_num(x)) / dt, 0.0)
        dx = np.where(new, dx + alpha(d_cutoff, dt) * (raw_dx - dx), dx)
        a = alpha(min_cutoff + beta * np.abs(dx), dt)
        x = np.where(new, x + a * (y[i] - np.nan_to_num(x)), np.where(seen[i], y[i], x))
        out[i] = np.where(np.isfinite(x), x, out[i])
    return out * scale


def smooth(method: str, t: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, groups: np.ndarray | None = None,
           fps: float = 30.0, scale: float = 1.0) -> np.ndarray:
    if method == "rts":
        return rts(t, y, w, groups)
    if method == "savgol":
        # the same duration at any frame rate: ~0.2 s (13 frames at 60 fps), at least 5 frames
        return savgol(t, y, w, window=max(5, int(round(0.2 * fps)) | 1))
    if method == "one_euro":
        return one_euro(t, y, w, fps=fps, scale=scale)
    if method == "none":
        return np.asarray(y, np.float64)
    raise ValueError(f"unknown smoothing method {method!r}; one of {', '.join(METHODS)}")
