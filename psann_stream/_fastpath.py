"""The compiled per-event loop: StatefulNet forward, hand-derived gradients, streaming optimiser and
online normalisers, walking a batch of events in exact order (numba, float64).

Why compiled code: an eager torch step costs 0.3-1 ms per event on these machines, almost all of it
dispatch overhead for tensors of a few dozen numbers; the same arithmetic in a compiled loop costs
a few microseconds. numba compiles plain Python/numpy loops to machine code, is widely used and well
maintained, and needs no build step (``cache=True`` keeps the compiled code between runs).

Everything here mirrors a torch reference exactly (same operations, same order of updates), and
``tests/test_fastpath.py`` checks it against that reference property by property. Layout:

* ``theta`` is the concatenation of ``StatefulNet.parameters()`` in order (each flattened row-major):
  per layer ``[raw_gain (if learnable)] W b raw_amplitude raw_frequency raw_decay``, then the head.
* ``lay[l] = (in, h, off_gain, off_W, off_b, off_A, off_F, off_D, off_state, off_rate, off_phase)`` per
  layer, ``off_gain = -1`` for a fixed gain (taken from ``fixed_gain``), ``off_rate = -1`` for the fixed
  rate ``cfg[0]`` (else raw rates ``nu``, ``rho = RATE_CAP exp(-exp(nu))``, one per unit, or per pair),
  ``off_phase = -1`` unless the units are oscillatory pairs (then ``h / 2`` angles);
  ``head = (off_W, off_b, h_last, T)`` for ``T`` outputs (``W`` row-major ``[T, h_last]``, then ``b``
  ``[T]``: one contiguous block). A layer's own parameters (gain, rate, phase) come before its
  ``W``, so ``[first own, off_W)`` is one block.
* traced learning: a row's traces are laid out like ``theta``; with oscillatory pairs twice (the
  sensitivities of each pair's even unit, then of its odd unit).
* ``cfg = (rho, beta, max_abs, gain_max, gain_eps)``; ``mode`` 0 trace, 1 gain, 2 legacy; ``bound``
  0 clip, 1 tanh.
* optimiser ``kind`` 0 ObGD ``(lr, kappa, trace_decay)``, 1 intentional ``(lr, kappa, eps, clip)``
  (``clip <= 0``: none), 2 Adam ``(lr, b1, b2, eps)``; ``buf1``/``buf2`` are its per-parameter arrays
  (trace; m, v) and ``scal`` its scalars (intentional: err_sq, err_w; Adam: t).
* normaliser ``(mean[F], m2[F], ws = [weight, count], forget, eps, on)``; the target's has ``T`` means.
* several outputs (``T > 1``): the error ``D = (y - mean_y) / std_y - y_hat`` is a vector; the gradient
  is that of ``u . y_hat`` with ``u = D / ||D||`` and the optimiser's error is ``||D||``, so the step
  ``||D|| grad(u . y_hat) = sum_k D_k grad y_hat_k`` descends the squared error of all outputs and
  ObGD's bound (every move at most ``1 / kappa`` in l1) holds as for one output. ``T = 1`` takes
  ``u = 1`` and the error itself (the one-output arithmetic, unchanged).
* monitor ``mon`` = ``[per layer: ema max|s|/M, ema saturated share] + [ema |a| per unit]
  + [ema grad norm, ema update ratio, ema effective step, max effective step]``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

F64_MAX = 1.7976931348623157e308  # np.finfo(np.float64).max
EXP_UNDERFLOW = -708.3964185322641  # ln of the smallest normal float64, 2**-1022
MON_DECAY = 0.99  # EMA decay of every monitor statistic (time constant 100 events)
RATE_CAP = 1.0 - 2.0**-20  # = psann_stream.state.RATE_CAP (the kernel imports nothing from the package)


@njit(cache=True, inline="always")
def _sd(m2j, meanj, early, denom, eps):
    """``RunningStats.std`` of one feature (variance 1 until two different values were seen)."""
    var = 1.0 if early or m2j <= 0.0 else m2j / denom
    return math.sqrt(var + eps * (1.0 + meanj * meanj))


@njit(cache=True, inline="always")
def _std(mean, m2, ws, forget, eps, j):
    return _sd(m2[j], mean[j], ws[1] < 2.0, ws[0] - 1.0 if forget == 1.0 else ws[0], eps)


@njit(cache=True, inline="always")
def _stds(mean, m2, ws, forget, eps, out):
    """``out[j] = _std(..., j)`` for every feature, the counters read once (``out`` may alias ``ws``
    as far as LLVM knows, so per-feature reads would be reloads)."""
    early, denom = ws[1] < 2.0, ws[0] - 1.0 if forget == 1.0 else ws[0]
    for j in range(mean.shape[0]):
        out[j] = _sd(m2[j], mean[j], early, denom, eps)


@njit(cache=True, inline="always")
def _stats_update(mean, m2, ws, forget, clip, row, sd):
    """Fold one row in (``RunningStats.update``); with ``clip > 0`` each value is first limited to
    ``mean +- clip * sd`` (once two different values were seen), so an outlier cannot poison the scale. ``sd``
    is each feature's standard deviation before this row (from :func:`_stds`, shared with the
    normalisation of the row: computing it once halves the square roots and divisions)."""
    limit = ws[1] >= 2.0 and clip > 0.0
    w = forget * ws[0] + 1.0
    for j in range(mean.shape[0]):
        v = row[j]
        if limit and m2[j] > 0.0:  # a constant so far has no scale to limit the first other value to
            band = clip * sd[j]
            v = min(max(v, mean[j] - band), mean[j] + band)
        d = v - mean[j]
        mean[j] += d / w
        m2[j] = forget * m2[j] + d * (v - mean[j])
    ws[0] = w
    ws[1] += 1.0


# Rows of a layer's work block ``work[l]`` (shape (W_ROWS, widest layer), C-contiguous): what the forward
# pass computes per unit and the backward pass reuses, unit i in column i. One 2-D block per layer rather
# than a 1-D array per quantity: LLVM vectorises a loop only if it can check cheaply that the arrays the
# loop writes do not overlap those it reads, and a block is one pointer, where 15-25 separate arrays were
# too many checks (10-32-32: forward 2.3 -> 1.9 us, backward 1.2 -> 1.05 us per event).
R_Z, R_A, R_SN, R_H = 0, 1, 2, 3  # pre-activation, activation, new state, output
R_AMP, R_F, R_D, R_SPA, R_SPF, R_SPD = 4, 5, 6, 7, 8, 9  # softplus of the raw parameters; their derivatives
R_GAM, R_DGAM, R_DB = 10, 11, 12  # gain, d gain / d raw gain, d bound / d pre-bound state
R_ENV, R_SIN, R_COS = 13, 14, 15  # exp(-d |z|), sin(f z), cos(f z)
R_T = 16  # tanh of the raw gain
R_GY, R_L1 = 17, 18  # backward: d y_hat / d output; the unit's share of ||G||_1
R_GGAIN, R_GAMP, R_GF, R_GD, R_GZ = 19, 20, 21, 22, 23  # backward: gradients of the raw parameters and of z
R_BITS = 24  # four rows of int64 scratch: the 2**k of each exp
R_RD, R_DCZ, R_KZ, R_KS = 28, 29, 30, 31  # traced learning: rho*D, ds/dz this step, gy*ka*da/dz, gy*ks
R_RHO, R_DRHO, R_GRATE = 32, 33, 34  # each unit's rate, d rate / d raw rate, gradient of the raw rate
R_PC, R_PS, R_GPH = 35, 36, 37  # oscillatory pairs: cos and sin of the pair's angle, the unit's share of its gradient
R_ROT = 38  # oscillatory pairs: the rotated previous state R(theta) s (before the rate)
W_ROWS = 39


# Vectorisable transcendentals. libm's exp/log1p/sin/cos are calls LLVM cannot vectorise; these are plain
# arithmetic (exp: Cody-Waite reduction + degree-14 Taylor, <= 1 ulp; log1p on [0, 1]: 2 atanh(s) with a
# split at sqrt(2) - 1, <= 2 ulp; sin/cos: 3-part pi/2 reduction + Taylor on [-pi/4, pi/4], <= 1 ulp for |x| <= SINCOS_LIMIT, libm
# beyond), applied in short passes over a layer's units (few arrays per loop, so LLVM vectorises them).
# test_fastpath holds them to numpy's. Measured: 32 units' softplus x3, envelope and sin/cos in 0.55-0.63 us
# against 2.3-2.5 us with libm.
SINCOS_LIMIT = 1e5
# How everything here is compiled: IEEE arithmetic with no fast-math flag that could change a weight (the
# only ``fastmath`` is ``reassoc`` on sums that feed nothing but the monitor), and numpy's error model (x / 0
# is inf or nan, as in numpy, instead of a ZeroDivisionError check on every division, which keeps a loop
# from vectorising; ~3.5 -> ~3.05 us per event). No division here can meet a zero from valid settings, and
# a non-finite result is caught where it matters: a non-finite prediction or update stops the event with
# nothing changed. Not ``contract``: LLVM's fusing depends on how the code was inlined, and inlining
# depends on whether a callee came from numba's disk cache, so two processes computed different weights
# (caught by the Ray and Kafka tests on a cold cache); the multiply-adds worth fusing are explicit
# :func:`_fma` calls instead (tests/test_compile_paths.py holds this).
_KERNEL = dict(cache=True, error_model="numpy")
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_TWO_OVER_PI = 0.6366197723675814
_PIO2_1 = 1.57079632673412561417e+00
_PIO2_2 = 6.07710050650619224932e-11
_PIO2_3 = 2.02226624879595063154e-21

@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (IEEE fused multiply-add, LLVM's ``llvm.fma``): the Horner steps
    below. Written out, not left to fast-math ``contract``: an explicit fma is exactly specified, so its
    result is the same on every machine and however the code was inlined (contraction was not: see
    ``_KERNEL``). Vector ``vfmadd`` on x86-64 with FMA; a libm call (slower, same bits) without."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d])), args)

    return sig, codegen


@njit(cache=True, inline="always")
def _exp_parts(v):
    """``exp(v)`` as ``(mantissa part, bits of 2**k)``: the caller multiplies the first by the second
    read as a float64. Below ``EXP_UNDERFLOW = ln(2**-1022)`` (where ``2**k`` has no normal float64)
    the mantissa part is 0, so ``exp`` underflows to 0 as libm's does (libm gives subnormals down to
    -745: a difference below 2.3e-308); a floor there instead would make ``|z| exp(-d |z|)``, the
    decay's gradient, O(1) at ``|z|`` near 1e308 where its limit is 0."""
    under = v < EXP_UNDERFLOW
    v = min(max(v, EXP_UNDERFLOW), 709.0)
    k = math.floor(v * _LOG2E + 0.5)
    r = (v - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800
    p = _fma(r, p, 1.0 / 479001600)
    p = _fma(r, p, 1.0 / 39916800)
    p = _fma(r, p, 1.0 / 3628800)
    p = _fma(r, p, 1.0 / 362880)
    p = _fma(r, p, 1.0 / 40320)
    p = _fma(r, p, 1.0 / 5040)
    p = _fma(r, p, 1.0 / 720)
    p = _fma(r, p, 1.0 / 120)
    p = _fma(r, p, 1.0 / 24)
    p = _fma(r, p, 1.0 / 6)
    p = _fma(r, p, 0.5)
    p = _fma(r, p, 1.0)
    return (0.0 if under else _fma(r, p, 1.0)), (np.int64(k) + 1023) << 52

@njit(cache=True, inline="always")
def _log1p_unit(u):
    """``log1p(u)`` for ``u`` in [0, 1] as ``2 atanh(s)``: ``s = u / (2 + u)`` up to ``u = sqrt(2) - 1``,
    above it ``ln 2 + log((1 + u) / 2)`` with ``s = (u - 1) / (u + 3)`` (``u - 1`` exact there). Both
    keep ``|s| <= 0.172``, so the odd series stops at ``s**21`` (next term < 1e-18 relative)."""
    big = u > 0.41421356237309503
    s = (u - 1.0 if big else u) / (u + 3.0 if big else 2.0 + u)
    s2 = s * s
    p = 1.0 / 21
    p = _fma(s2, p, 1.0 / 19)
    p = _fma(s2, p, 1.0 / 17)
    p = _fma(s2, p, 1.0 / 15)
    p = _fma(s2, p, 1.0 / 13)
    p = _fma(s2, p, 1.0 / 11)
    p = _fma(s2, p, 1.0 / 9)
    p = _fma(s2, p, 1.0 / 7)
    p = _fma(s2, p, 1.0 / 5)
    p = _fma(s2, p, 1.0 / 3)
    r = 2.0 * _fma(s, s2 * p, s)
    return _LN2_HI + (_LN2_LO + r) if big else r


@njit(cache=True, inline="always")
def _sincos(v):
    k = math.floor(v * _TWO_OVER_PI + 0.5)
    r = ((v - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    r2 = r * r
    ps = _fma(r2, 1.0 / 355687428096000, -1.0 / 1307674368000)
    ps = _fma(r2, ps, 1.0 / 6227020800)
    ps = _fma(r2, ps, -1.0 / 39916800)
    ps = _fma(r2, ps, 1.0 / 362880)
    ps = _fma(r2, ps, -1.0 / 5040)
    ps = _fma(r2, ps, 1.0 / 120)
    ps = _fma(r2, ps, -1.0 / 6)
    sv = _fma(r, r2 * ps, r)
    pc = _fma(r2, -1.0 / 6402373705728000, 1.0 / 20922789888000)
    pc = _fma(r2, pc, -1.0 / 87178291200)
    pc = _fma(r2, pc, 1.0 / 479001600)
    pc = _fma(r2, pc, -1.0 / 3628800)
    pc = _fma(r2, pc, 1.0 / 40320)
    pc = _fma(r2, pc, -1.0 / 720)
    pc = _fma(r2, pc, 1.0 / 24)
    pc = _fma(r2, pc, -0.5)
    cv = _fma(r2, pc, 1.0)
    q = k - 4.0 * math.floor(k * 0.25)
    odd = q == 1.0 or q == 3.0
    a = cv if odd else sv
    b = sv if odd else cv
    return (-a if q >= 2.0 else a), (-b if (q == 1.0 or q == 2.0) else b)

@njit(cache=True, inline="always")
def _softplus(x, u):
    if x > 20.0:
        return x, 1.0
    return max(x, 0.0) + _log1p_unit(u), (1.0 / (1.0 + u) if x >= 0.0 else u / (1.0 + u))


@njit(cache=True, inline="always")
def _expm1_small(v):
    """``expm1(v)`` for ``|v| <= 1.25``: Taylor to degree 21 (< 1e-17 relative)."""
    p = 1.0 / 51090942171709440000
    p = _fma(v, p, 1.0 / 2432902008176640000)
    p = _fma(v, p, 1.0 / 121645100408832000)
    p = _fma(v, p, 1.0 / 6402373705728000)
    p = _fma(v, p, 1.0 / 355687428096000)
    p = _fma(v, p, 1.0 / 20922789888000)
    p = _fma(v, p, 1.0 / 1307674368000)
    p = _fma(v, p, 1.0 / 87178291200)
    p = _fma(v, p, 1.0 / 6227020800)
    p = _fma(v, p, 1.0 / 479001600)
    p = _fma(v, p, 1.0 / 39916800)
    p = _fma(v, p, 1.0 / 3628800)
    p = _fma(v, p, 1.0 / 362880)
    p = _fma(v, p, 1.0 / 40320)
    p = _fma(v, p, 1.0 / 5040)
    p = _fma(v, p, 1.0 / 720)
    p = _fma(v, p, 1.0 / 120)
    p = _fma(v, p, 1.0 / 24)
    p = _fma(v, p, 1.0 / 6)
    p = _fma(v, p, 0.5)
    return _fma(v, v * p, v)


@njit(**_KERNEL)
def _tanh_pass(x, out, bits):
    """``out = tanh(x)``, odd in ``x``, ``a = |x|``: for ``2a <= 1.25`` ``m / (m + 2)`` with
    ``m = expm1(2a)`` (a Taylor series of positive terms: no cancellation); beyond, ``1 - 2e / (1 + e)``
    with ``e = exp(-2a) <= 0.29``, whose small correction carries its rounding (<= 2 ulp both ways,
    where ``-expm1(-2a) / (2 + expm1(-2a))`` lost up to 5 near 0.5 and 9). ``bits`` is int64 scratch."""
    n = x.shape[0]
    for i in range(n):
        out[i], bits[i] = _exp_parts(-2.0 * abs(x[i]))
    scale = bits.view(np.float64)
    for i in range(n):
        v = 2.0 * abs(x[i])
        if v <= 1.25:
            m = _expm1_small(v)
            t = m / (m + 2.0)
        else:
            e = out[i] * scale[i]
            t = 1.0 - 2.0 * e / (1.0 + e)
        out[i] = t if x[i] >= 0.0 else -t


@njit(**_KERNEL)
def vtanh(x):
    """``tanh`` of an array (for tests)."""
    out = np.empty(x.shape[0])
    _tanh_pass(x, out, np.empty(x.shape[0], dtype=np.int64))
    return out


@njit(**_KERNEL)
def _rates(raw, w):
    """Learnable rates of one layer's units: ``R_RHO = RATE_CAP exp(-exp(raw))`` and ``R_DRHO`` its
    derivative ``-rho exp(raw)`` (``state.rate_from_raw``)."""
    n = raw.shape[0]
    bits = w[R_BITS].view(np.int64)
    for i in range(n):
        w[R_DRHO, i], bits[i] = _exp_parts(raw[i])
    for i in range(n):
        w[R_DRHO, i] *= w[R_BITS, i]
    for i in range(n):
        w[R_RHO, i], bits[i] = _exp_parts(-w[R_DRHO, i])
    for i in range(n):
        r = RATE_CAP * (w[R_RHO, i] * w[R_BITS, i])
        w[R_RHO, i] = r
        w[R_DRHO, i] = -r * w[R_DRHO, i]


@njit(**_KERNEL)
def _pair_rows(w, h, oph, theta):
    """Oscillatory pairs: each unit's copy of its pair's rate (``R_RHO``, ``R_DRHO``, computed per pair
    in the first ``h / 2`` columns) and of the cos / sin of its pair's angle (``R_PC``, ``R_PS``)."""
    # per pair in the first h / 2 columns, in loops without a branch that vectorise (64 pairs: 0.65 us
    # per event as one loop with the branch, measured), libm where the reduction is not accurate
    for k in range(h // 2):
        w[R_PS, k], w[R_PC, k] = _sincos(theta[oph + k])
    for k in range(h // 2):
        th = theta[oph + k]
        if not abs(th) <= SINCOS_LIMIT:
            w[R_PS, k], w[R_PC, k] = math.sin(th), math.cos(th)
    for i in range(h - 1, -1, -1):  # downwards: column i // 2 <= i is read before it is overwritten
        w[R_RHO, i] = w[R_RHO, i // 2]
        w[R_DRHO, i] = w[R_DRHO, i // 2]
        w[R_PS, i] = w[R_PS, i // 2]
        w[R_PC, i] = w[R_PC, i // 2]


@njit(**_KERNEL)
def _unit_functions(raw_a, raw_f, raw_d, w):
    """For one layer's units (``w`` its work block, ``R_Z`` filled): amplitude, frequency, decay
    (softplus of the raw parameters, decay + 1e-6) and their derivatives, the envelope ``exp(-d |z|)``
    and ``sin``/``cos`` of ``f z`` (libm where ``|f z| > SINCOS_LIMIT`` or not finite)."""
    n = raw_a.shape[0]
    b0, b1, b2, b3 = w[R_BITS].view(np.int64), w[R_BITS + 1].view(np.int64), w[R_BITS + 2].view(np.int64), w[R_BITS + 3].view(np.int64)
    for i in range(n):
        w[R_SPA, i], b0[i] = _exp_parts(-abs(raw_a[i]))
    for i in range(n):
        w[R_SPF, i], b1[i] = _exp_parts(-abs(raw_f[i]))
    for i in range(n):
        w[R_SPD, i], b2[i] = _exp_parts(-abs(raw_d[i]))
    for i in range(n):
        w[R_AMP, i], w[R_SPA, i] = _softplus(raw_a[i], w[R_SPA, i] * w[R_BITS, i])
    for i in range(n):
        w[R_F, i], w[R_SPF, i] = _softplus(raw_f[i], w[R_SPF, i] * w[R_BITS + 1, i])
    for i in range(n):
        d, w[R_SPD, i] = _softplus(raw_d[i], w[R_SPD, i] * w[R_BITS + 2, i])
        w[R_D, i] = d + 1e-6
    for i in range(n):
        w[R_ENV, i], b3[i] = _exp_parts(-w[R_D, i] * abs(w[R_Z, i]))
    for i in range(n):
        w[R_ENV, i] *= w[R_BITS + 3, i]
    for i in range(n):
        w[R_SIN, i], w[R_COS, i] = _sincos(w[R_F, i] * w[R_Z, i])
    for i in range(n):  # beyond the reduction's accuracy, or inf/nan (rare; a loop of its own keeps the others vector code)
        fz = w[R_F, i] * w[R_Z, i]
        if not abs(fz) <= SINCOS_LIMIT:
            w[R_SIN, i], w[R_COS, i] = math.sin(fz), math.cos(fz)


@njit(**_KERNEL)
def _units_forward(w, state, fixed_gain, mode, bound, beta, m, gmax, geps, has_gain, osc):
    """One layer's units, after :func:`_unit_functions` (and, with ``has_gain``, ``R_T`` = tanh of the
    raw gain; ``R_RHO`` = each unit's rate; with ``osc``, ``R_PC``/``R_PS`` = its pair's rotation):
    activation, new state (bounded), output, gain and the derivatives the backward pass needs. A
    non-finite envelope * sin zeroes the unit (and its cached envelope, sin, cos)."""
    h = state.shape[0]
    prev = state
    if osc:  # R(theta) (s_even, s_odd) = (c s_e - sn s_o, sn s_e + c s_o): the same bits as state.rotate_pairs
        # (a - b == a + (-b), and + commutes); in a loop of its own, so the one below has no branch on it
        for i in range(h):
            sg = float(2 * (i & 1) - 1)
            w[R_ROT, i] = w[R_PC, i] * state[i] + (sg * w[R_PS, i]) * state[i ^ 1]
        prev = w[R_ROT, :h]
    for i in range(h):
        es = w[R_ENV, i] * w[R_SIN, i]
        ok = math.isfinite(es)
        if not ok:
            w[R_ENV, i], w[R_SIN, i], w[R_COS, i] = 0.0, 0.0, 0.0
        a = w[R_AMP, i] * es if ok else 0.0
        a = a if math.isfinite(a) else 0.0
        s = state[i]
        if mode == 0:
            drive = a
        elif mode == 1:
            drive = abs(a)
        else:
            drive = min(abs(a * s), F64_MAX)  # state.update_state: inf * (beta = 0) would be NaN
        rho = w[R_RHO, i]
        pre = rho * prev[i] + ((1.0 - rho) * beta) * drive
        w[R_A, i] = a
        if bound == 0:
            w[R_SN, i] = min(max(pre, -m), m)
            w[R_DB, i] = 1.0 if (pre >= -m and pre <= m) else 0.0
        else:
            w[R_SN, i] = pre / m  # tanh below
    if bound == 1:
        _tanh_pass(w[R_SN, :h], w[R_DB, :h], w[R_BITS].view(np.int64)[:h])
        for i in range(h):
            t = w[R_DB, i]
            w[R_SN, i] = t * m
            w[R_DB, i] = 1.0 - t * t
    for i in range(h):
        a, sn, s = w[R_A, i], w[R_SN, i], state[i]
        if has_gain:
            th = w[R_T, i]
            gam = gmax * th
            dgam = gmax * (1.0 - th * th)
        else:
            gam = fixed_gain[i]
            dgam = 0.0
        if mode == 0:
            out = a + gam * sn
        elif mode == 1:
            out = gam * a / (geps + sn)
        else:
            out = gam * a * s
        w[R_H, i], w[R_GAM, i], w[R_DGAM, i] = out, gam, dgam


def vexp(x: np.ndarray) -> np.ndarray:
    """``exp`` of an array through the compiled routine (for tests)."""
    return _vexp(np.ascontiguousarray(x, dtype=np.float64))


@njit(**_KERNEL)
def _vexp(x):
    out = np.empty(x.shape[0])
    bits = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        out[i], bits[i] = _exp_parts(x[i])
    scale = bits.view(np.float64)
    for i in range(x.shape[0]):
        out[i] *= scale[i]
    return out


@njit(**_KERNEL)
def vlog1p_unit(u):
    """``log1p`` of an array of values in [0, 1] (for tests)."""
    out = np.empty(u.shape[0])
    for i in range(u.shape[0]):
        out[i] = _log1p_unit(u[i])
    return out


@njit(**_KERNEL)
def vsincos(x):
    """``(sin, cos)`` of an array (for tests)."""
    s, c = np.empty(x.shape[0]), np.empty(x.shape[0])
    for i in range(x.shape[0]):
        s[i], c[i] = _sincos(x[i])
    return s, c


@njit(**_KERNEL)
def _affine(W, b, hin, out):
    """``out = W @ hin + b`` for a row-major ``W[h, n_in]``, each output summed over ``j`` in order.
    Four rows at a time: four independent sums share each ``hin[j]`` load and keep the adder busy
    (one row at a time is one chain of dependent adds; i-innermost needs strided loads). A function
    of its own on plain slices, so LLVM need not assume ``out`` aliases ``W`` (measured, 10-32-32:
    ~1.2 us inline with one row at a time -> 0.29 us)."""
    h, n_in = out.shape[0], hin.shape[0]
    i = 0
    while i + 4 <= h:
        r0, r1, r2, r3 = i * n_in, (i + 1) * n_in, (i + 2) * n_in, (i + 3) * n_in
        a0, a1, a2, a3 = b[i], b[i + 1], b[i + 2], b[i + 3]
        for j in range(n_in):
            v = hin[j]
            a0 += W[r0 + j] * v
            a1 += W[r1 + j] * v
            a2 += W[r2 + j] * v
            a3 += W[r3 + j] * v
        out[i], out[i + 1], out[i + 2], out[i + 3] = a0, a1, a2, a3
        i += 4
    for i in range(i, h):
        a = b[i]
        for j in range(n_in):
            a += W[i * n_in + j] * hin[j]
        out[i] = a


@njit(cache=True, inline="always")
def _layer_input(xin, lay, work, l):
    """Layer ``l``'s input: the (normalised) event for the first layer, else the outputs of layer
    ``l - 1`` in its work block."""
    return xin if l == 0 else work[l - 1, R_H, :lay[l, 0]]


@njit(**_KERNEL)
def _forward(theta, lay, head, fixed_gain, cfg, mode, bound, state, xin, work, yh):
    """One forward pass for one event: fills each layer's work block ``work[l]`` (rows ``R_*``) and
    ``yh`` (``[T]``, the normalised outputs). Leaves ``state`` unchanged (the new state is
    ``work[l, R_SN]``)."""
    rho, beta, m, gmax, geps = cfg[0], cfg[1], cfg[2], cfg[3], cfg[4]
    n_layers = lay.shape[0]
    for l in range(n_layers):
        n_in, h, og, ow, ob, oa, of, od, os_ = lay[l, 0], lay[l, 1], lay[l, 2], lay[l, 3], lay[l, 4], lay[l, 5], lay[l, 6], lay[l, 7], lay[l, 8]
        orr, oph = lay[l, 9], lay[l, 10]
        w = work[l]
        hin = _layer_input(xin, lay, work, l)
        _affine(theta[ow:ow + h * n_in], theta[ob:ob + h], hin, w[R_Z, :h])
        _unit_functions(theta[oa:oa + h], theta[of:of + h], theta[od:od + h], w)
        if og >= 0:
            _tanh_pass(theta[og:og + h], w[R_T, :h], w[R_BITS].view(np.int64)[:h])
        if orr >= 0:
            _rates(theta[orr:orr + (h // 2 if oph >= 0 else h)], w)
        else:
            w[R_RHO, :h] = rho
        if oph >= 0:
            _pair_rows(w, h, oph, theta)
        _units_forward(w, state[os_:os_ + h], fixed_gain[os_:os_ + h], mode, bound, beta, m, gmax, geps, og >= 0, oph >= 0)
    hw, hb, hl = head[0], head[1], head[2]
    out = work[n_layers - 1, R_H]
    for k in range(head[3]):
        y = theta[hb + k]
        row = hw + k * hl
        for j in range(hl):
            y += theta[row + j] * out[j]
        yh[k] = y


@njit(**_KERNEL)
def _affine_backward(W, dz, hin, gW, ghin, weights, input_grad):
    """Backward of :func:`_affine`: if ``weights``, ``gW = outer(dz, hin)``; if ``input_grad``,
    ``ghin = W.T @ dz`` (each ``ghin[j]`` summed over ``i`` in order, four rows per pass over ``j``).
    ``ghin`` must not overlap ``dz`` or ``gW``."""
    h, n_in = dz.shape[0], hin.shape[0]
    if weights:
        for i in range(h):
            g = dz[i]
            row = i * n_in
            for j in range(n_in):
                gW[row + j] = g * hin[j]
    if not input_grad:
        return
    for j in range(n_in):
        ghin[j] = 0.0
    i = 0
    while i + 4 <= h:
        g0, g1, g2, g3 = dz[i], dz[i + 1], dz[i + 2], dz[i + 3]
        r0, r1, r2, r3 = i * n_in, (i + 1) * n_in, (i + 2) * n_in, (i + 3) * n_in
        for j in range(n_in):
            t = ghin[j]
            t += W[r0 + j] * g0
            t += W[r1 + j] * g1
            t += W[r2 + j] * g2
            t += W[r3 + j] * g3
            ghin[j] = t
        i += 4
    for i in range(i, h):
        g = dz[i]
        for j in range(n_in):
            ghin[j] += W[i * n_in + j] * g


@njit(cache=True, inline="always")
def _unit_backward(w, i, s, mode, c, geps, in_l1):
    """Unit ``i`` of :func:`_units_backward` (``c = (1 - rho) beta`` its drive's weight, ``s`` its
    previous state)."""
    z, a, sn = w[R_Z, i], w[R_A, i], w[R_SN, i]
    gam, db = w[R_GAM, i], w[R_DB, i]
    env, sin_fz, cos_fz = w[R_ENV, i], w[R_SIN, i], w[R_COS, i]
    if mode == 0:
        dphi = 1.0
    elif mode == 1:
        dphi = 1.0 if a > 0 else (-1.0 if a < 0 else 0.0)
    else:
        p = a * s
        dphi = (1.0 if p > 0 else (-1.0 if p < 0 else 0.0)) * s
    ds_da = db * c * dphi
    if mode == 0:
        gy_a = 1.0 + gam * ds_da
        gy_gam = sn
    elif mode == 1:
        den = geps + sn
        gy_a = gam / den - gam * a / (den * den) * ds_da
        gy_gam = a / den
    else:
        gy_a = gam * s
        gy_gam = a * s
    gy = w[R_GY, i]
    gg = gy * gy_gam * w[R_DGAM, i]
    ga = gy * gy_a
    sz = 1.0 if z > 0 else (-1.0 if z < 0 else 0.0)
    amp = w[R_AMP, i]
    g_amp = ga * (env * sin_fz) * w[R_SPA, i]
    g_f = ga * amp * env * z * cos_fz * w[R_SPF, i]
    g_d = ga * (-abs(z) * a) * w[R_SPD, i]
    dz = ga * (amp * env * (w[R_F, i] * cos_fz - w[R_D, i] * sz * sin_fz))
    w[R_GGAIN, i], w[R_GAMP, i], w[R_GF, i], w[R_GD, i], w[R_GZ, i] = gg, g_amp, g_f, g_d, dz
    w[R_L1, i] = abs(gg) + abs(g_amp) + abs(g_f) + abs(g_d) + abs(dz) * (1.0 + in_l1)


@njit(cache=True, inline="always")
def _dy_dstate(w, i, mode, geps):
    """``d y_hat / d (pre-bound state)`` of unit ``i``: ``gy * d out / d s * D`` (trace and gain mode)."""
    gam, sn = w[R_GAM, i], w[R_SN, i]
    if mode == 0:
        gy_s = gam
    else:
        den = geps + sn
        gy_s = -gam * w[R_A, i] / (den * den)
    return w[R_GY, i] * gy_s * w[R_DB, i]


@njit(**_KERNEL)
def _units_backward(w, state, mode, beta, geps, in_l1, has_rate, osc):
    """One layer's units, backward, from ``R_GY`` (d y_hat / d output): the gradients of the raw gain,
    amplitude, frequency, decay and (``has_rate``) rate and of the pre-activation (``R_GZ``, = the
    bias gradient), and ``R_L1`` = each unit's share of ``||G||_1``, its weight row counted as
    ``|g_z| * (1 + in_l1)`` (``in_l1`` = l1 norm of the layer's input; the 1 is the bias). No sum runs
    across units. With ``osc`` each unit's share of its pair's rate and angle gradients goes to
    ``R_GRATE``, ``R_GPH`` (the caller sums each pair's two shares; ``R_L1`` leaves them out). The
    rates and angles have loops of their own, and one rate for the layer a loop with a constant drive
    weight: per-unit loads in the main loop cost ~0.5 us per event (measured, 10-32-32)."""
    h = state.shape[0]
    if has_rate or osc:
        for i in range(h):
            _unit_backward(w, i, state[i], mode, (1.0 - w[R_RHO, i]) * beta, geps, in_l1)
    else:
        c = (1.0 - w[R_RHO, 0]) * beta
        for i in range(h):
            _unit_backward(w, i, state[i], mode, c, geps, in_l1)
    if osc:  # d pre / d rate = rotated s_prev - beta a; d pre / d angle = rate * R'(theta) s_prev
        for i in range(h):
            ks = _dy_dstate(w, i, mode, geps)
            s, so = state[i], state[i ^ 1]
            sig = -1.0 if i % 2 == 0 else 1.0
            pc, ps = w[R_PC, i], w[R_PS, i]
            w[R_GRATE, i] = ks * ((pc * s + sig * ps * so) - beta * w[R_A, i]) * w[R_DRHO, i]
            w[R_GPH, i] = ks * w[R_RHO, i] * (sig * pc * so - ps * s)
    elif has_rate:  # d s / d rho = s_prev - beta phi(a) inside the bound (trace and gain mode)
        for i in range(h):
            a = w[R_A, i]
            phi = a if mode == 0 else abs(a)
            g_r = _dy_dstate(w, i, mode, geps) * (state[i] - beta * phi) * w[R_DRHO, i]
            w[R_GRATE, i] = g_r
            w[R_L1, i] += abs(g_r)


@njit(cache=True, inline="always")
def _seed_head(theta, head, top, G, u):
    """The head's part of the gradient of ``u . y_hat`` into ``G`` and ``d (u . y_hat) / d output`` into
    the last layer's ``R_GY``; returns the head's share of ``||G||_1`` (bias first, then the weights, in
    order). With one output and ``u = 1`` every value is exactly the one-output gradient's."""
    hw, hb, hl = head[0], head[1], head[2]
    for j in range(hl):
        top[R_GY, j] = 0.0
    gl1 = 0.0
    for k in range(head[3]):
        uk = u[k]
        G[hb + k] = uk
        gl1 += abs(uk)
        row = hw + k * hl
        for j in range(hl):
            g = uk * top[R_H, j]
            G[row + j] = g
            gl1 += abs(g)
            top[R_GY, j] += uk * theta[row + j]
    return gl1


@njit(**_KERNEL)
def _backward(theta, lay, head, cfg, mode, state, xin, work, G, weights, u, head_l1):
    """Gradient of ``u . y_hat`` (``u`` of :func:`_event`; one output: ``u = 1``) with respect to theta
    into G (one step, the previous state detached), from the work blocks of :func:`_forward`; returns
    ``||G||_1`` (the units' shares summed in order; the head's share first, or left out without
    ``head_l1``: an RLS readout moves the head, the optimiser the rest). With ``weights`` False the
    weight matrices' parts of G are left unwritten (they are ``outer(R_GZ, layer input)``;
    :func:`_obgd_plain` rebuilds them)."""
    beta, geps = cfg[1], cfg[4]
    n_layers = lay.shape[0]
    gl1 = _seed_head(theta, head, work[n_layers - 1], G, u)  # ||G||_1 (ObGD needs it before its update pass)
    if not head_l1:
        gl1 = 0.0
    for l in range(n_layers - 1, -1, -1):
        n_in, h, og, ow, ob, oa, of, od, os_ = lay[l, 0], lay[l, 1], lay[l, 2], lay[l, 3], lay[l, 4], lay[l, 5], lay[l, 6], lay[l, 7], lay[l, 8]
        w = work[l]
        hin = _layer_input(xin, lay, work, l)
        in_l1 = 0.0
        for j in range(n_in):
            in_l1 += abs(hin[j])
        orr, oph = lay[l, 9], lay[l, 10]
        _units_backward(w, state[os_:os_ + h], mode, beta, geps, in_l1, orr >= 0, oph >= 0)
        if oph >= 0:
            for k in range(h // 2):
                g = w[R_GPH, 2 * k] + w[R_GPH, 2 * k + 1]
                G[oph + k] = g
                gl1 += abs(g)
                if orr >= 0:
                    g = w[R_GRATE, 2 * k] + w[R_GRATE, 2 * k + 1]
                    G[orr + k] = g
                    gl1 += abs(g)
        elif orr >= 0:
            for i in range(h):
                G[orr + i] = w[R_GRATE, i]
        for i in range(h):
            G[oa + i] = w[R_GAMP, i]
            G[of + i] = w[R_GF, i]
            G[od + i] = w[R_GD, i]
            G[ob + i] = w[R_GZ, i]
        if og >= 0:
            for i in range(h):
                G[og + i] = w[R_GGAIN, i]
        for i in range(h):
            gl1 += w[R_L1, i]
        _affine_backward(theta[ow:ow + h * n_in], w[R_GZ, :h], hin, G[ow:ow + h * n_in],
                         work[max(l - 1, 0), R_GY, :n_in], weights, l > 0)
    return gl1


@njit(cache=True, inline="always")
def _activation_partials(w, i):
    """``da/dz`` and ``da`` by the raw amplitude, frequency and decay of unit ``i`` (from its work
    rows), the one-step sensitivities the traced passes feed their traces with."""
    z, a = w[R_Z, i], w[R_A, i]
    env, sin_fz, cos_fz, amp = w[R_ENV, i], w[R_SIN, i], w[R_COS, i], w[R_AMP, i]
    sz = 1.0 if z > 0 else (-1.0 if z < 0 else 0.0)
    return (amp * env * (w[R_F, i] * cos_fz - w[R_D, i] * sz * sin_fz), (env * sin_fz) * w[R_SPA, i],
            amp * env * z * cos_fz * w[R_SPF, i], (-abs(z) * a) * w[R_SPD, i])


@njit(**_KERNEL)
def _units_traced(w, state, mode, beta, geps, E, EN, G, Er, ENr, Gr):
    """Traced learning, one layer's units, from ``R_GY``: the eligibility traces of the bias, raw
    amplitude, frequency and decay advance (``EN = D (rho E + c phi' da/dtheta)``, read from ``E``,
    written to ``EN``; the four blocks of ``h`` values in that order) and their traced gradients
    ``gy (ka da/dtheta + ks EN)`` go to ``G`` (same blocks), where ``ka``, ``ks`` are the output's
    derivatives by the activation and by the new state. Also fills ``R_GZ`` (the one-step gradient
    of z, which flows to the layer below), ``R_GGAIN`` and the rows the weight traces need
    (``R_RD``, ``R_DCZ``, ``R_KZ``, ``R_KS``). With learnable rates (``Er`` not empty) the raw rates'
    traces ``D (rho E + (s_prev - beta phi(a)) d rho / d nu)`` and gradients go to ``ENr``, ``Gr``."""
    h = state.shape[0]
    has_rate = Er.shape[0] > 0
    for i in range(h):
        a, sn = w[R_A, i], w[R_SN, i]
        gam, db = w[R_GAM, i], w[R_DB, i]
        if mode == 0:
            dphi = 1.0
            ka, ks, gy_gam = 1.0, gam, sn
        else:
            dphi = 1.0 if a > 0 else (-1.0 if a < 0 else 0.0)
            den = geps + sn
            ka, ks, gy_gam = gam / den, -gam * a / (den * den), a / den
        rho = w[R_RHO, i]
        dc = db * ((1.0 - rho) * beta) * dphi
        rd = db * rho
        gy = w[R_GY, i]
        p_z, p_a, p_f, p_d = _activation_partials(w, i)
        gk, gs = gy * ka, gy * ks
        e = rd * E[i] + dc * p_z
        EN[i] = e
        G[i] = gk * p_z + gs * e
        e = rd * E[h + i] + dc * p_a
        EN[h + i] = e
        G[h + i] = gk * p_a + gs * e
        e = rd * E[2 * h + i] + dc * p_f
        EN[2 * h + i] = e
        G[2 * h + i] = gk * p_f + gs * e
        e = rd * E[3 * h + i] + dc * p_d
        EN[3 * h + i] = e
        G[3 * h + i] = gk * p_d + gs * e
        w[R_GZ, i] = gy * (ka + ks * dc) * p_z
        w[R_GGAIN, i] = gy * gy_gam * w[R_DGAM, i]
        w[R_RD, i], w[R_DCZ, i], w[R_KZ, i], w[R_KS, i] = rd, dc * p_z, gk * p_z, gs
        if has_rate:
            phi = a if mode == 0 else abs(a)
            e = rd * Er[i] + db * (state[i] - beta * phi) * w[R_DRHO, i]
            ENr[i] = e
            Gr[i] = gs * e


@njit(**_KERNEL)
def _weights_traced(E, EN, G, hin, w):
    """Traced learning, one layer's weight matrix (row-major ``[h, n_in]``): ``EN_ij = rho D_i E_ij +
    (ds_i/dz_i) x_j`` and ``G_ij = gy_i ka_i (da_i/dz_i) x_j + gy_i ks_i EN_ij``, from the rows
    :func:`_units_traced` filled."""
    n_in = hin.shape[0]
    for i in range(G.shape[0] // n_in):
        rd, dcz, kz, ks = w[R_RD, i], w[R_DCZ, i], w[R_KZ, i], w[R_KS, i]
        row = i * n_in
        for j in range(n_in):
            e = rd * E[row + j] + dcz * hin[j]
            EN[row + j] = e
            G[row + j] = kz * hin[j] + ks * e


@njit(cache=True, inline="always")
def _pair_trace(eu, ev, du, dv, rho, pc, ps):
    """One step of a parameter's pair of traces without its drive: ``(D_u rho (c e_u - s e_v),
    D_v rho (s e_u + c e_v))``."""
    return du * (rho * (pc * eu - ps * ev)), dv * (rho * (ps * eu + pc * ev))


@njit(**_KERNEL)
def _units_traced_osc(w, state, beta, E0, E1, EN0, EN1, G, Er0, Er1, ENr0, ENr1, Gr, Ep0, Ep1, ENp0, ENp1, Gp):
    """Traced learning for a layer of oscillatory pairs (mode 'trace'): as :func:`_units_traced`, but a
    parameter moves both states of its pair, so each has two traces, the even unit's sensitivity
    (``E0``) and the odd unit's (``E1``): ``e' = D (rho R(theta) e + drive)`` with the drive
    ``(1 - rho) beta da/dtheta`` on the parameter's own unit only, and its gradient is
    ``gy ka da/dtheta + KS_even e'_even + KS_odd e'_odd``. ``Er*``/``Gr`` (rates, per pair; empty when
    fixed) and ``Ep*``/``Gp`` (angles, per pair) follow the same recursion with the drives
    ``d pre / d nu`` and ``d pre / d theta``. Fills ``R_GZ``, ``R_GGAIN`` and the rows
    :func:`_weights_traced_osc` reads."""
    h = state.shape[0]
    has_rate = Er0.shape[0] > 0
    for i in range(h):  # per-unit quantities first: a pair's update needs both of its units'
        sn = w[R_SN, i]
        gam, db = w[R_GAM, i], w[R_DB, i]
        rho = w[R_RHO, i]
        dc = db * ((1.0 - rho) * beta)
        gy = w[R_GY, i]
        p_z = _activation_partials(w, i)[0]
        w[R_GZ, i] = gy * (1.0 + gam * dc) * p_z
        w[R_GGAIN, i] = gy * sn * w[R_DGAM, i]
        w[R_RD, i], w[R_DCZ, i], w[R_KZ, i], w[R_KS, i] = db, dc * p_z, gy * p_z, gy * gam
    for k in range(h // 2):
        u, v = 2 * k, 2 * k + 1
        du, dv, rho = w[R_DB, u], w[R_DB, v], w[R_RHO, u]
        pc, ps, ksu, ksv = w[R_PC, u], w[R_PS, u], w[R_KS, u], w[R_KS, v]
        for i in (u, v):
            own = w[R_DB, i] * ((1.0 - rho) * beta)
            cu = own if i == u else 0.0  # the drive enters the parameter's own unit only
            cv = own if i == v else 0.0
            gy = w[R_GY, i]
            parts = _activation_partials(w, i)  # da/d(b, raw amplitude, raw frequency, raw decay)
            for blk in range(4):
                part = parts[blk]
                q = blk * h + i
                nu, nv = _pair_trace(E0[q], E1[q], du, dv, rho, pc, ps)
                nu += cu * part
                nv += cv * part
                EN0[q], EN1[q] = nu, nv
                G[q] = gy * part + ksu * nu + ksv * nv
        su, sv = state[u], state[v]
        # angle: d pre_u / d theta = rho (-s su - c sv), d pre_v / d theta = rho (c su - s sv)
        nu, nv = _pair_trace(Ep0[k], Ep1[k], du, dv, rho, pc, ps)
        nu += du * (rho * (-ps * su - pc * sv))
        nv += dv * (rho * (pc * su - ps * sv))
        ENp0[k], ENp1[k] = nu, nv
        Gp[k] = ksu * nu + ksv * nv
        if has_rate:  # d pre / d nu = (R(theta) s_prev - beta a) d rho / d nu
            drho = w[R_DRHO, u]
            nu, nv = _pair_trace(Er0[k], Er1[k], du, dv, rho, pc, ps)
            nu += du * ((pc * su - ps * sv) - beta * w[R_A, u]) * drho
            nv += dv * ((ps * su + pc * sv) - beta * w[R_A, v]) * drho
            ENr0[k], ENr1[k] = nu, nv
            Gr[k] = ksu * nu + ksv * nv


@njit(**_KERNEL)
def _weights_traced_osc(E0, E1, EN0, EN1, G, hin, w):
    """Traced learning, the weight matrix of a layer of oscillatory pairs: both traces of every
    ``W_ij`` (:func:`_units_traced_osc`), from the rows it filled."""
    n_in = hin.shape[0]
    h = G.shape[0] // n_in
    for k in range(h // 2):
        u, v = 2 * k, 2 * k + 1
        du, dv, rho, pc, ps = w[R_DB, u], w[R_DB, v], w[R_RHO, u], w[R_PC, u], w[R_PS, u]
        ksu, ksv = w[R_KS, u], w[R_KS, v]
        for i in (u, v):
            # the drive enters the row's own unit only; as a coefficient (0 for the other), not a
            # branch, so the loop over inputs vectorises
            cu = w[R_DCZ, i] if i == u else 0.0
            cv = w[R_DCZ, i] if i == v else 0.0
            kz = w[R_KZ, i]
            row = i * n_in
            for j in range(n_in):
                q = row + j
                nu, nv = _pair_trace(E0[q], E1[q], du, dv, rho, pc, ps)
                nu += cu * hin[j]
                nv += cv * hin[j]
                EN0[q], EN1[q] = nu, nv
                G[q] = kz * hin[j] + ksu * nu + ksv * nv


@njit(**_KERNEL)
def _backward_traced(theta, lay, head, cfg, mode, state, xin, work, G, E, EN, u):
    """Traced learning: the gradient of ``u . y_hat`` into ``G`` with every stateful layer's parameters seen
    through their eligibility traces (exact within a layer), one-step backpropagation between layers;
    the advanced traces go to ``EN`` (laid out like ``theta``: only the W, b, amplitude, frequency and
    decay blocks, and the rates' with learnable rates, are used). ``E`` is read only, so a failed
    update can leave the traces unchanged."""
    beta, geps = cfg[1], cfg[4]
    n_layers = lay.shape[0]
    P = theta.shape[0]
    _seed_head(theta, head, work[n_layers - 1], G, u)
    for l in range(n_layers - 1, -1, -1):
        n_in, h, og, ow, ob, os_, orr, oph = lay[l, 0], lay[l, 1], lay[l, 2], lay[l, 3], lay[l, 4], lay[l, 8], lay[l, 9], lay[l, 10]
        w = work[l]
        hin = _layer_input(xin, lay, work, l)
        nw = h * n_in
        if oph >= 0:
            hp = h // 2
            r0, r1 = (orr, orr + hp) if orr >= 0 else (0, 0)
            _units_traced_osc(w, state[os_:os_ + h], beta, E[ob:ob + 4 * h], E[P + ob:P + ob + 4 * h],
                              EN[ob:ob + 4 * h], EN[P + ob:P + ob + 4 * h], G[ob:ob + 4 * h],
                              E[r0:r1], E[P + r0:P + r1], EN[r0:r1], EN[P + r0:P + r1], G[r0:r1],
                              E[oph:oph + hp], E[P + oph:P + oph + hp], EN[oph:oph + hp], EN[P + oph:P + oph + hp],
                              G[oph:oph + hp])
            _weights_traced_osc(E[ow:ow + nw], E[P + ow:P + ow + nw], EN[ow:ow + nw], EN[P + ow:P + ow + nw],
                                G[ow:ow + nw], hin, w)
        else:
            r0, r1 = (orr, orr + h) if orr >= 0 else (0, 0)
            _units_traced(w, state[os_:os_ + h], mode, beta, geps, E[ob:ob + 4 * h], EN[ob:ob + 4 * h], G[ob:ob + 4 * h],
                          E[r0:r1], EN[r0:r1], G[r0:r1])
            _weights_traced(E[ow:ow + nw], EN[ow:ow + nw], G[ow:ow + nw], hin, w)
        if og >= 0:
            for i in range(h):
                G[og + i] = w[R_GGAIN, i]
        _affine_backward(theta[ow:ow + h * n_in], w[R_GZ, :h], hin, G[ow:ow + h * n_in],
                         work[max(l - 1, 0), R_GY, :n_in], False, l > 0)


@njit(cache=True, inline="always")
def _copy(dst, src):
    """``dst[:] = src`` as a plain loop (numba's slice assignment is ~2x slower here, measured)."""
    for p in range(dst.shape[0]):
        dst[p] = src[p]


@njit(**_KERNEL)
def _axpy(theta, G, step):
    """``theta += step * G``."""
    for p in range(theta.shape[0]):
        theta[p] += G[p] * step


@njit(cache=True, fastmath={"reassoc"})
def _sum_sq(v):
    """``sum(v**2)`` in vector lanes, for the monitor only: ``reassoc`` lets LLVM split the sum, so its
    last bits depend on the CPU's vector width and on how the code was compiled. Nothing that a weight
    depends on is computed this way."""
    out = 0.0
    for p in range(v.shape[0]):
        out += v[p] * v[p]
    return out


@njit(cache=True, fastmath={"reassoc"})
def _move_sums(M, G):
    """The monitor's ``sum(|move|)`` and ``<move, G>`` of the moves ``M`` just taken, in vector lanes
    (see :func:`_sum_sq`)."""
    l1 = 0.0
    along = 0.0
    for p in range(G.shape[0]):
        l1 += abs(M[p])
        along += M[p] * G[p]
    return l1, along


@njit(cache=True, fastmath={"reassoc"})
def _sum_abs(v):
    """``sum(|v|)`` in vector lanes, for the monitor only (see :func:`_sum_sq`)."""
    out = 0.0
    for p in range(v.shape[0]):
        out += abs(v[p])
    return out


@njit(**_KERNEL)
def _outer_axpy(W, dz, hin, step):
    """``W += step * outer(dz, hin)`` for a row-major ``W[h, n_in]``, each element rounded as
    ``(dz[i] * hin[j]) * step``, exactly as ``G[p] * step`` with the stored gradient would be (no
    fastmath here: ``reassoc`` would let LLVM hoist ``dz[i] * step`` and change the weights)."""
    n_in = hin.shape[0]
    for i in range(dz.shape[0]):
        g = dz[i]
        row = i * n_in
        for j in range(n_in):
            W[row + j] += (g * hin[j]) * step


@njit(cache=True, inline="always")
def _obgd_step(zl1, delta, lr, kappa):
    """ObGD's signed step ``a_hat * delta`` (NaN if not finite), ``zl1 = ||z||_1``."""
    dbar = max(abs(delta), 1.0)
    step = lr / max(lr * kappa * dbar * zl1, 1.0) * delta
    return step if (math.isfinite(zl1) and math.isfinite(step)) else math.nan


@njit(**_KERNEL)
def _obgd_plain(theta, G, gl1, delta, hyp, lay, head, work, xin, move_head):
    """ObGD without a trace (the default), after a :func:`_backward` that left the weight matrices'
    gradients unstored: each is ``outer(dz, hin)`` of rows the work blocks hold, so the update
    rebuilds it on the fly (bit-identical weights; ~25 KB less memory traffic per event for
    10-32-32). Without ``move_head`` the head stays (an RLS readout moves it; ``gl1`` is then the
    rest's l1). Returns what :func:`_optimise` returns; the move's l1 and ``<move, G>`` follow from
    ``||G||_1`` and ``||G||^2``, and ``||G||^2`` over a weight matrix is ``||dz||^2 ||hin||^2``."""
    step = _obgd_step(gl1, delta, hyp[0], hyp[1])
    if not math.isfinite(step):
        return math.nan, 0.0, 0.0, 0.0
    gsq = 0.0
    for l in range(lay.shape[0]):
        n_in, h, og, ow, ob, od, orr, oph = lay[l, 0], lay[l, 1], lay[l, 2], lay[l, 3], lay[l, 4], lay[l, 7], lay[l, 9], lay[l, 10]
        hin = _layer_input(xin, lay, work, l)
        dz = work[l, R_GZ, :h]
        _outer_axpy(theta[ow:ob], dz, hin, step)
        gsq += _sum_sq(dz) * _sum_sq(hin)
        own = og if og >= 0 else (orr if orr >= 0 else oph)  # the layer's own parameters sit just before W
        if own >= 0:
            _axpy(theta[own:ow], G[own:ow], step)
            gsq += _sum_sq(G[own:ow])
        _axpy(theta[ob:od + h], G[ob:od + h], step)
        gsq += _sum_sq(G[ob:od + h])
    if move_head:
        end = head[1] + head[3]  # the head's weights and biases: one block
        _axpy(theta[head[0]:end], G[head[0]:end], step)
        gsq += _sum_sq(G[head[0]:end])
    return abs(step) * gl1, step * gsq, gsq, _sum_abs(theta)


@njit(**_KERNEL)
def _obgd_dense(theta, G, delta, hyp):
    """ObGD without a trace on a fully stored gradient (traced learning, RLS readout): the step
    :func:`_optimise` takes (``theta += G * step``) without copying ``G`` into a trace first, its
    ``||G||_1`` summed in fixed lanes (:func:`_l1_lanes`, equal to the ordered sum up to rounding);
    the monitor's other sums in vector lanes (:func:`_sum_abs`, :func:`_sum_sq`)."""
    gl1 = _l1_lanes(G)
    step = _obgd_step(gl1, delta, hyp[0], hyp[1])
    if not math.isfinite(step):
        return math.nan, 0.0, 0.0, 0.0
    _axpy(theta, G, step)
    gsq = _sum_sq(G)
    return abs(step) * gl1, step * gsq, gsq, _sum_abs(theta)


@njit(cache=True, inline="always")
def _l1_lanes(G):
    """``sum(|G|)`` in eight fixed lanes (element ``p`` in lane ``p % 8``; the lanes added pairwise,
    then the tail). The ObGD step depends on it, so the order is the code's, not the compiler's (no
    ``reassoc``, see ``_KERNEL``): the same value on every CPU. Eight independent sums instead of one
    chain of dependent adds: ~1 us less per traced event for 10-32-32-1 (measured)."""
    n = G.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for p in range(0, m, 8):
        s0 += abs(G[p])
        s1 += abs(G[p + 1])
        s2 += abs(G[p + 2])
        s3 += abs(G[p + 3])
        s4 += abs(G[p + 4])
        s5 += abs(G[p + 5])
        s6 += abs(G[p + 6])
        s7 += abs(G[p + 7])
    out = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for p in range(m, n):
        out += abs(G[p])
    return out


@njit(**_KERNEL)
def _optimise(theta, G, delta, kind, hyp, buf1, buf2, scal):
    """Apply one value-form step with the full gradient ``G`` (ObGD here with a trace; without one
    see :func:`_obgd_plain`); returns (l1 of the move, <move, G>, ||G||^2, ||theta||_1 after). A step
    that would not be finite changes nothing (parameters, traces, moments, counters) and returns a
    NaN l1: every optimiser checks what it needs before it writes (Adam computes its moves once, in
    the check, and then applies them: a scratch array here costs less than one passed down from the
    loop, which slowed every ObGD event by ~3%, measured)."""
    P = theta.shape[0]
    l1 = 0.0
    along = 0.0
    gsq = 0.0
    tl1 = 0.0
    if kind == 0:
        lr, kappa, td = hyp[0], hyp[1], hyp[2]
        zl1 = 0.0
        for p in range(P):
            zl1 += abs(td * buf1[p] + G[p])
        step = _obgd_step(zl1, delta, lr, kappa)
        if not math.isfinite(step):
            return math.nan, 0.0, 0.0, 0.0
        for p in range(P):
            buf1[p] = td * buf1[p] + G[p]
            mv = buf1[p] * step
            theta[p] += mv
            l1 += abs(mv)
            along += mv * G[p]
            gsq += G[p] * G[p]
            tl1 += abs(theta[p])
    elif kind == 1:
        lr, kappa, eps, clip = hyp[0], hyp[1], hyp[2], hyp[3]
        d = delta
        if clip > 0.0 and scal[1] > 0.0:
            limit = clip * math.sqrt(scal[0] / scal[1])
            d = max(-limit, min(limit, d))
        for p in range(P):
            gsq += G[p] * G[p]
        k = lr * d / (eps + gsq)
        raw = 0.0
        for p in range(P):
            raw += abs(G[p] * k)
        if not (math.isfinite(raw) and math.isfinite(k)):
            return math.nan, 0.0, 0.0, 0.0
        scal[0] = 0.999 * scal[0] + delta * delta
        scal[1] = 0.999 * scal[1] + 1.0
        cap = 1.0 / (kappa * raw) if raw > 0.0 else 1.0
        for p in range(P):
            mv = G[p] * k
            if cap < 1.0:
                mv = mv * cap
            theta[p] += mv
            l1 += abs(mv)
            along += mv * G[p]
            tl1 += abs(theta[p])
    else:
        lr, b1, b2, eps = hyp[0], hyp[1], hyp[2], hyp[3]
        t = scal[0] + 1.0
        # -lr m_hat / (sqrt(v_hat) + eps) with the bias corrections folded into two scalars: one
        # division and one square root per parameter instead of three divisions and a square root,
        # which bound this loop (1,441 parameters: 3.3 -> 1.9 us per event, measured); equal to the
        # textbook form (psann_stream.optim.StreamingAdam) up to rounding
        step = -lr / (1.0 - b1**t)
        root = 1.0 / math.sqrt(1.0 - b2**t)
        # The check before anything is written: every move finite and below 1e308 / P, so that their
        # l1 is finite too (NaN fails the comparison). A count, not a sum of floats: exact in any
        # order, so this trial pass vectorises like the step itself (sqrt and / are exact in lanes).
        limit = 1e308 / P
        M = np.empty(P)
        bad = 0
        for p in range(P):
            g = G[p] * (-delta)
            mv = step * (buf1[p] * b1 + g * (1.0 - b1)) / (math.sqrt(buf2[p] * b2 + g * g * (1.0 - b2)) * root + eps)
            M[p] = mv
            if not abs(mv) < limit:
                bad += 1
        if bad:
            return math.nan, 0.0, 0.0, 0.0
        scal[0] = t
        for p in range(P):  # no reduction in this loop either; the move is the one checked above
            g = G[p] * (-delta)
            buf1[p] = buf1[p] * b1 + g * (1.0 - b1)
            buf2[p] = buf2[p] * b2 + g * g * (1.0 - b2)
            theta[p] += M[p]
        l1, along = _move_sums(M, G)
        gsq = _sum_sq(G)
        tl1 = _sum_abs(theta)
    return l1, along, gsq, tl1


@njit(cache=True, inline="always")
def _rls_denominator(z, a, lam):
    """The gain's denominator ``lam + z . a``, summed in order."""
    d = lam
    for i in range(z.shape[0]):
        d += z[i] * a[i]
    return d


@njit(**_KERNEL)
def _rls_gain(P, z, a, lam):
    """Recursive least squares, first half: ``a = P z`` (``P`` row-major ``n x n``) and the returned
    denominator ``lam + z . a`` (> 0 while ``P`` is positive definite). Writes only ``a``.

    ``P`` is exactly symmetric (:func:`_rls_downdate`), so ``a_i = sum_j P_ji z_j``: summed over ``j`` in
    order, as the row form would, but a whole row of ``P`` at a time, which vectorises (the row form
    is a chain of dependent adds per element; ~6x slower for a 129-wide readout, measured)."""
    n = z.shape[0]
    for i in range(n):
        a[i] = 0.0
    for j in range(n):
        zj = z[j]
        row = j * n
        for i in range(n):
            a[i] += P[row + i] * zj
    return _rls_denominator(z, a, lam)


@njit(cache=True, inline="always")
def _rls_error(P, delta, clip):
    """The error the readout learns: ``delta`` limited to ``clip`` times the RMS of the errors it
    learned before (``P``'s last two entries: their discounted sum of squares and weight; ``clip <= 0``:
    no limit), which then folds the limited error in. One absurd target cannot throw a second-order
    readout across the whole space (the shock scenario's 1e6 outliers). No limit while every error
    learned so far was exactly 0 (a stream that starts with zero targets): their RMS of 0 would
    limit every later error to 0, and the readout would never learn."""
    n2 = P.shape[0] - 2
    e = delta
    if clip > 0.0 and P[n2] > 0.0:
        limit = clip * math.sqrt(P[n2] / P[n2 + 1])
        e = max(-limit, min(limit, e))
    return e


@njit(**_KERNEL)
def _rls_learn(P, theta, head, a, d, D, clip):
    """The readout's move in the RLS step of every output of the head (weights ``[T, h]`` then biases
    ``[T]``), one ``P`` for all (they share their input), after :func:`_rls_gain`: output ``k`` learns
    its error ``D[k]`` limited by :func:`_rls_error`; ``P``'s error statistics (its two last entries)
    take the mean square of the limited errors. ``P``'s matrix is left to :func:`_rls_downdate` or
    :func:`_rls_defer`."""
    hw, hb, hl = head[0], head[1], head[2]
    esq = 0.0
    for k in range(head[3]):
        e = _rls_error(P, D[k], clip)
        g = e / d
        row = hw + k * hl
        for i in range(hl):
            theta[row + i] += a[i] * g
        theta[hb + k] += a[hl] * g
        esq += e * e
    n = a.shape[0]
    P[n * n] = 0.999 * P[n * n] + esq / head[3]
    P[n * n + 1] = 0.999 * P[n * n + 1] + 1.0


@njit(**_KERNEL)
def _rls_head(P, theta, head, a, d, D, lam, cap, clip):
    """The whole RLS step after :func:`_rls_gain`: :func:`_rls_learn`, then :func:`_rls_downdate`."""
    _rls_learn(P, theta, head, a, d, D, clip)
    _rls_downdate(P, a, d, lam, cap)


@njit(cache=True, inline="always")
def _rls_scale(P, a, inv, lam, cap):
    """The downdate's scale ``1 / f``, ``f = max(lam, trace / cap)`` with the trace of ``P - a a^T inv``
    (the trace after the update, so that ``P`` is then written in one pass)."""
    n = a.shape[0]
    tr = 0.0
    for i in range(n):
        tr += P[i * n + i] - (a[i] * a[i]) * inv
    return 1.0 / max(lam, tr / cap)


@njit(**_KERNEL)
def _rls_downdate(P, a, d, lam, cap):
    """Recursive least squares, second half (Sherman-Morrison with forgetting ``lam``), after the
    readout moved (:func:`_rls_learn`): ``P <- (P - a a^T / d) / f`` with
    ``f = max(lam, trace / cap)``: the forgetting never lifts the trace of ``P`` above ``cap`` (no
    wind-up while the inputs do not excite every direction). Each element is
    ``(P_ij - (a_i a_j) / d) / f`` with the product formed first, so ``P`` stays exactly symmetric."""
    inv = 1.0 / d
    _rls_apply(P, a, inv, _rls_scale(P, a, inv, lam, cap))


@njit(**_KERNEL)
def _rls_apply(P, a, inv, scale):
    """``P <- (P - a a^T inv) scale``, element by element as :func:`_rls_downdate` documents."""
    n = a.shape[0]
    for i in range(n):
        row = i * n
        ai = a[i]
        for j in range(n):
            P[row + j] = (P[row + j] - (ai * a[j]) * inv) * scale


@njit(cache=True, inline="always")
def _rls_defer(P, a, d, lam, cap, pa, RD):
    """:func:`_rls_downdate` left for later: its vector into ``pa``, ``1 / d`` and the scale into
    ``RD``. The next :func:`_rls_gain_after` applies it in the pass that forms its gain, and
    :func:`_rls_flush` when the loop ends: one pass over ``P`` per event instead of two (``P`` is
    129 x 129 for a 128-unit readout, 133 KB, read from cache twice per event otherwise).
    ``P``'s matrix is stale until then; nothing else reads it (:func:`_rls_error` reads only the
    statistics, which :func:`_rls_learn` updated)."""
    inv = 1.0 / d
    RD[1] = _rls_scale(P, a, inv, lam, cap)
    RD[0] = inv
    for i in range(a.shape[0]):
        pa[i] = a[i]


@njit(**_KERNEL)
def _rls_gain_after(P, pa, RD, z, a, lam):
    """:func:`_rls_gain` after a deferred downdate (``RD[1] > 0``, see :func:`_rls_defer`), which is
    applied in the same pass: each element of ``P`` is downdated exactly as :func:`_rls_downdate`
    would, then enters ``a`` in the order :func:`_rls_gain` uses (rows in order), so both are
    bit-identical to the two passes. Four rows at a time: ``a`` is then loaded and stored once per
    four rows of ``P`` instead of once per row (stores bound the one-row loop: 129-wide readout
    ~4.9 us per event against ~3.6 us, against ~6.4 us for the two passes; measured). Without a
    deferred downdate, :func:`_rls_gain` itself."""
    if RD[1] == 0.0:
        return _rls_gain(P, z, a, lam)
    n = z.shape[0]
    inv, scale = RD[0], RD[1]
    RD[1] = 0.0
    for i in range(n):
        a[i] = 0.0
    j = 0
    while j + 4 <= n:
        z0, z1, z2, z3 = z[j], z[j + 1], z[j + 2], z[j + 3]
        p0, p1, p2, p3 = pa[j], pa[j + 1], pa[j + 2], pa[j + 3]
        r0 = j * n
        r1 = r0 + n  # a chain: with r0 + 2 * n and r0 + 3 * n the loop below ran ~3x slower (measured)
        r2 = r1 + n
        r3 = r2 + n
        for i in range(n):
            pi = pa[i]
            v0 = (P[r0 + i] - (p0 * pi) * inv) * scale
            v1 = (P[r1 + i] - (p1 * pi) * inv) * scale
            v2 = (P[r2 + i] - (p2 * pi) * inv) * scale
            v3 = (P[r3 + i] - (p3 * pi) * inv) * scale
            P[r0 + i] = v0
            P[r1 + i] = v1
            P[r2 + i] = v2
            P[r3 + i] = v3
            a[i] = (((a[i] + v0 * z0) + v1 * z1) + v2 * z2) + v3 * z3
        j += 4
    for r in range(j, n):  # the last n % 4 rows
        zj, pj, row = z[r], pa[r], r * n
        for i in range(n):
            v = (P[row + i] - (pj * pa[i]) * inv) * scale
            P[row + i] = v
            a[i] += v * zj
    return _rls_denominator(z, a, lam)


@njit(cache=True, inline="always")
def _rls_flush(P, pa, RD):
    """Apply a deferred downdate (:func:`_rls_defer`), if any: the loop's last act, so that ``P`` is
    current whenever the loop is not running."""
    scale = RD[1]
    if scale != 0.0:
        RD[1] = 0.0
        _rls_apply(P, pa, RD[0], scale)


@njit(**_KERNEL)
def _monitor(mon, lay, SN, A, m, gsq, tl1, l1, eff, n_layers):
    """Fold one learned event into the monitor's moving averages (layout in the module doc)."""
    dec = MON_DECAY
    total_units = SN.shape[0]
    for l in range(n_layers):
        h, os_ = lay[l, 1], lay[l, 8]
        peak = 0.0
        sat = 0.0
        for i in range(h):
            v = abs(SN[os_ + i])
            peak = max(peak, v)
            if v >= 0.99 * m:
                sat += 1.0
        mon[2 * l] = dec * mon[2 * l] + (1.0 - dec) * peak / m
        mon[2 * l + 1] = dec * mon[2 * l + 1] + (1.0 - dec) * sat / h
    base = 2 * n_layers
    for k in range(total_units):
        mon[base + k] = dec * mon[base + k] + (1.0 - dec) * abs(A[k])
    g = base + total_units
    mon[g] = dec * mon[g] + (1.0 - dec) * math.sqrt(gsq)
    mon[g + 1] = dec * mon[g + 1] + (1.0 - dec) * (l1 / tl1 if tl1 > 0.0 else 0.0)
    mon[g + 2] = dec * mon[g + 2] + (1.0 - dec) * eff
    mon[g + 3] = max(mon[g + 3], eff)


@njit(cache=True, inline="always")
def _ph_clear(ph):
    ph[0], ph[1], ph[2], ph[3], ph[4], ph[5] = 0.0, 0.0, 0.0, 0.0, math.inf, -1.0


@njit(cache=True, inline="always")
def page_hinkley(ph, e, pcfg):
    """One step of river's ``drift.PageHinkley.update(e)`` (the same float operations) on the state
    ``ph`` = [n, mean, sum_inc, sum_dec, min_inc, max_dec]; ``pcfg`` = [min_instances, delta,
    threshold, alpha, mode (0 up, 1 down, 2 both)]. Returns True on drift, and then clears ``ph``
    (river clears it at its next update, which gives the same values)."""
    ph[0] += 1.0
    ph[1] += (1.0 / ph[0]) * (e - ph[1])
    dev = e - ph[1]
    ph[2] = pcfg[3] * ph[2] + dev - pcfg[1]
    ph[3] = pcfg[3] * ph[3] + dev + pcfg[1]
    if ph[2] < ph[4]:
        ph[4] = ph[2]
    if ph[3] > ph[5]:
        ph[5] = ph[3]
    if ph[0] < pcfg[0]:
        return False
    up = ph[2] - ph[4] > pcfg[2]
    down = ph[5] - ph[3] > pcfg[2]
    drift = (up and pcfg[4] != 1.0) or (down and pcfg[4] != 0.0)
    if drift:
        _ph_clear(ph)
    return drift


@njit(cache=True, inline="always")
def _on_drift(ph, pcfg, e, state, E, init, reset_state, reset_opt, kind, buf1, scal):
    """Feed the normalised absolute error ``e`` to the key's detector; on drift reset its state (and
    its eligibility traces ``E``, empty unless traced) and/or restart its optimiser (the array
    ``_packing.restart_buffer`` names: ObGD traces, otherwise the scalars)."""
    if not page_hinkley(ph, e, pcfg):
        return False
    if reset_state:
        state[:] = init
        E[:] = 0.0
    if reset_opt:
        if kind == 0:
            buf1[:] = 0.0
        else:
            scal[:] = 0.0
    return True


@njit(cache=True, inline="always")
def _target_scales(ym, ym2, yws, yf, ye, yon, YS):
    """Each output's target scale into ``YS[1]`` (``std_y``, 1 without the target normaliser)."""
    if yon:
        _stds(ym, ym2, yws, yf, ye, YS[1])
    else:
        YS[1, :] = 1.0


@njit(**_KERNEL)
def predict_event(theta, lay, head, fixed_gain, cfg, mode, bound, state, x, xm, xm2, xws, xf, xe, xon,
                  ym, ym2, yws, yf, ye, yon, work, NS, YS, pred):
    """The prediction (target units, ``pred[T]``) of one event ``x`` from ``state``, as
    :func:`run_events` makes it, changing nothing but the scratch (``work``: ``(n_layers, W_ROWS,
    widest layer)``, ``NS``: ``(2, F)``, ``YS``: ``(4, T)``). Returns ``pred[0]`` (one output's
    caller needs no array access)."""
    F = x.shape[0]
    XN, SD = NS[0, :F], NS[1, :F]
    if xon:  # as in _event
        _stds(xm, xm2, xws, xf, xe, SD)
        for j in range(F):
            XN[j] = (x[j] - xm[j]) / SD[j]
    else:
        XN[:] = x
    _forward(theta, lay, head, fixed_gain, cfg, mode, bound, state, XN, work, YS[0])
    _target_scales(ym, ym2, yws, yf, ye, yon, YS)
    for k in range(head[3]):
        pred[k] = YS[0, k] * YS[1, k] + (ym[k] if yon else 0.0)
    return pred[0]


@njit(cache=True, inline="always")
def _error_direction(YS, T):
    """The optimiser's error and ``u`` (module doc) from the errors ``YS[2]``: one output, the error
    itself and ``u = 1``; several, ``||D||`` and ``D / ||D||`` (``u = 0`` when every error is 0)."""
    if T == 1:
        YS[3, 0] = 1.0
        return YS[2, 0]
    ss = 0.0
    for k in range(T):
        ss += YS[2, k] * YS[2, k]
    dn = math.sqrt(ss)
    for k in range(T):
        YS[3, k] = YS[2, k] / dn if dn > 0.0 else 0.0
    return dn


@njit(cache=True, inline="always")
def _drift_error(pred, y, ym, ym2, yws, yf, ye, yon, YS):
    """What the drift detector reads after an event: the absolute error over the target scale, the
    scale with the event folded in (several outputs: the mean over outputs). Writes ``YS[1]``."""
    _target_scales(ym, ym2, yws, yf, ye, yon, YS)
    T = pred.shape[0]
    if T == 1:
        return abs(pred[0] - y[0]) / YS[1, 0]
    e = 0.0
    for k in range(T):
        e += abs(pred[k] - y[k]) / YS[1, k]
    return e / T


@njit(**_KERNEL)
def _event(theta, lay, head, fixed_gain, cfg, mode, bound, state, x, y, pred, learn,
           kind, hyp, buf1, buf2, scal,
           xm, xm2, xws, xf, xe, xon, ym, ym2, yws, yf, ye, yon, nclip,
           mon, mon_on, work, A, G, NS, YS, traced, E, EN, rls, P, rcfg, RZ, RD):
    """Predict one event (``x [F]``; its prediction in target units into ``pred [T]``), learn its
    target ``y [T]`` if ``learn``, advance the state and the normalisers. Returns the status: 0 ok,
    1 non-finite prediction, 2 non-finite update (in both cases nothing was changed). Scratch:
    ``work`` (n_layers, W_ROWS, widest layer), ``A`` the activations of all units (for the monitor),
    ``G`` the gradient, ``NS`` of shape (2, F): row 0 the normalised input, row 1 the inputs'
    standard deviations; ``YS`` of shape (4, T): the normalised outputs, the target scales, the
    normalised errors and ``u`` (module doc). With ``traced``, the gradient sees the state through
    the eligibility traces ``E`` (laid out like ``theta``), which advance with the state, learned or
    not: the advanced traces go to ``EN`` (same size, zero where unused; ``E`` is only read), which
    the caller takes as the row's traces when the status is 0. With ``rls`` the head (readout) is
    learned by recursive least squares on the last layer's outputs and a constant (``P`` its
    inverse-correlation matrix, shared by the outputs, then two error statistics; ``rcfg =
    (forgetting, trace cap, error clip, warm-up)``: with ``yon`` it learns once the target statistics
    hold that many values; ``RZ`` scratch of shape (3, h_last + 1): input, gain, the deferred
    downdate's vector; ``RD`` the deferred downdate's ``1 / d`` and scale, :func:`_rls_defer`: the
    caller ends its loop with :func:`_rls_flush`) and the optimiser moves every other parameter."""
    F = x.shape[0]
    T = head[3]
    XN, SD = NS[0, :F], NS[1, :F]
    # predict_event repeats these lines: the same lines as a shared inline helper made every event
    # ~4% slower (measured); tests/test_learner.py holds the two predictions bit-identical
    if xon:
        _stds(xm, xm2, xws, xf, xe, SD)
        for j in range(F):
            XN[j] = (x[j] - xm[j]) / SD[j]
    else:
        XN[:] = x
    _forward(theta, lay, head, fixed_gain, cfg, mode, bound, state, XN, work, YS[0])
    _target_scales(ym, ym2, yws, yf, ye, yon, YS)
    for k in range(T):
        p = YS[0, k] * YS[1, k] + (ym[k] if yon else 0.0)
        pred[k] = p
        if not math.isfinite(p):
            return 1
    eff = 0.0
    l1 = 0.0
    gsq = 0.0
    tl1 = 0.0
    delta = 0.0
    if learn:
        for k in range(T):
            YS[2, k] = (y[k] - (ym[k] if yon else 0.0)) / YS[1, k] - YS[0, k]
        delta = _error_direction(YS, T)
    elif traced:
        YS[3, :T] = 0.0  # nothing is learned: the traces advance, the gradient is not used
    if traced:
        _backward_traced(theta, lay, head, cfg, mode, state, XN, work, G, E, EN, YS[3])
    if learn:
        d = 0.0
        readout_learns = rls and (not yon or yws[1] >= rcfg[3])  # after the target statistics' warm-up
        if readout_learns:  # the readout's gain first: nothing is written before every part of the step is finite
            hl = head[2]
            top = work[lay.shape[0] - 1]
            for j in range(hl):
                RZ[0, j] = top[R_H, j]
            RZ[0, hl] = 1.0
            d = _rls_gain_after(P, RZ[2], RD, RZ[0], RZ[1], rcfg[0])
            if not (math.isfinite(d) and d > 0.0):
                return 2
        plain = kind == 0 and hyp[2] == 0.0
        gl1 = 0.0
        if not traced:  # with an RLS readout the head's share is left out: the optimiser moves the rest
            gl1 = _backward(theta, lay, head, cfg, mode, state, XN, work, G, not plain, YS[3], not rls)
        if rls and not (plain and not traced):  # the optimiser moves everything but the readout
            for j in range(head[3] * (head[2] + 1)):
                G[head[0] + j] = 0.0
        if plain and not traced:
            l1, along, gsq, tl1 = _obgd_plain(theta, G, gl1, delta, hyp, lay, head, work, XN, not rls)
        elif plain:
            l1, along, gsq, tl1 = _obgd_dense(theta, G, delta, hyp)
        else:
            l1, along, gsq, tl1 = _optimise(theta, G, delta, kind, hyp, buf1, buf2, scal)
        if not math.isfinite(l1):
            return 2
        if readout_learns:
            _rls_learn(P, theta, head, RZ[1], d, YS[2], rcfg[2])
            _rls_defer(P, RZ[1], d, rcfg[0], rcfg[1], RZ[2], RD)
        eff = along / delta if delta != 0.0 else 0.0
    for l in range(lay.shape[0]):
        os_ = lay[l, 8]
        for i in range(lay[l, 1]):
            state[os_ + i] = work[l, R_SN, i]
    if xon:
        _stats_update(xm, xm2, xws, xf, nclip, x, SD)
    if yon and learn:
        _stats_update(ym, ym2, yws, yf, nclip, y, YS[1])
    if mon_on and learn:
        for l in range(lay.shape[0]):  # the monitor takes the activations of all units in one array
            os_ = lay[l, 8]
            for i in range(lay[l, 1]):
                A[os_ + i] = work[l, R_A, i]
        _monitor(mon, lay, state, A, cfg[2], gsq, tl1, l1, eff, lay.shape[0])
    return 0


@njit(cache=True, inline="always")
def _event_scratch(F, T, hl):
    """The small scratch of :func:`_event` (``NS`` (2, F), ``YS`` (4, T), ``RZ`` (3, hl + 1), ``RD``
    (2): no deferred downdate) in one allocation: a one-event call pays every allocation of its loop
    (~0.2 us each, measured)."""
    buf = np.empty(2 * F + 4 * T + 3 * (hl + 1) + 2)
    a, b, c = 2 * F, 2 * F + 4 * T, 2 * F + 4 * T + 3 * (hl + 1)
    RD = buf[c:]
    RD[:] = 0.0
    return buf[:a].reshape(2, F), buf[a:b].reshape(4, T), buf[b:c].reshape(3, hl + 1), RD


@njit(**_KERNEL)
def run_packed(F, I, X, Y, learn, skip, out, drifted):
    """:func:`run_events` for a one-row learner whose arrays are packed into ``F`` (float64) and ``I``
    (int64) by :meth:`psann_stream.core.Core.pack` (that method documents the layout): eight
    arguments instead of 44, since numba's dispatch costs ~60 ns per argument and a one-event call
    pays it every time. Returns ``(events done, status)`` as :func:`run_events`."""
    nl = I[22]
    lay = I[34:34 + 11 * nl].reshape(nl, 11)
    head = I[34 + 11 * nl:38 + 11 * nl]
    forget, eps, clip, init = F[I[20]], F[I[20] + 1], F[I[20] + 2], F[I[20] + 3]
    states = F[I[1]:I[2]].reshape(1, I[2] - I[1])
    traces = F[I[2]:I[3]].reshape(1, I[3] - I[2])
    ph = F[I[13]:I[14]].reshape(1, I[14] - I[13])
    rows = np.zeros(X.shape[0], dtype=np.int64)
    traced, xon, yon = I[26] != 0, I[27] != 0, I[28] != 0
    mon_on = I[29] != 0 and learn
    ph_on, reset_state, reset_opt, rls = I[30] != 0, I[31] != 0, I[32] != 0, I[33] != 0
    return run_events(F[I[0]:I[1]], lay, head, F[I[17]:I[18]], F[I[16]:I[17]], I[23], I[24], states, traces, traced,
                      rows, X, Y, learn, skip, I[25], F[I[15]:I[16]], F[I[3]:I[4]], F[I[4]:I[5]], F[I[5]:I[6]],
                      F[I[6]:I[7]], F[I[7]:I[8]], F[I[8]:I[9]], forget, eps, xon,
                      F[I[9]:I[10]], F[I[10]:I[11]], F[I[11]:I[12]], forget, eps, yon, clip, F[I[12]:I[13]], mon_on, out,
                      ph, F[I[19]:I[20]], ph_on, init, reset_state, reset_opt, drifted, rls, F[I[14]:I[15]],
                      F[I[18]:I[19]], np.empty((0, 0)))


@njit(**_KERNEL)
def predict_packed(F, I, x, work, NS, YS, pred):
    """:func:`predict_event` for a one-row learner packed as for :func:`run_packed` (returns the first
    output; all of them are in ``pred``)."""
    nl = I[22]
    lay = I[34:34 + 11 * nl].reshape(nl, 11)
    head = I[34 + 11 * nl:38 + 11 * nl]
    forget, eps = F[I[20]], F[I[20] + 1]
    xon, yon = I[27] != 0, I[28] != 0
    return predict_event(F[I[0]:I[1]], lay, head, F[I[17]:I[18]], F[I[16]:I[17]], I[23], I[24], F[I[1]:I[2]], x,
                         F[I[6]:I[7]], F[I[7]:I[8]], F[I[8]:I[9]], forget, eps, xon,
                         F[I[9]:I[10]], F[I[10]:I[11]], F[I[11]:I[12]], forget, eps, yon, work, NS, YS, pred)


@njit(parallel=True, **_KERNEL)
def run_keyed(theta, lay, head, fixed_gain, cfg, mode, bound, states, traces, traced, X, Y, learn, skip, order,
              starts, keys, kind, hyp, buf1, buf2, scal,
              xm, xm2, xws, xf, xe, xon, ym, ym2, yws, yf, ye, yon, nclip, mon, mon_on, out, status,
              ph, pcfg, ph_on, init, reset_state, reset_opt, drifted, rls, P, rcfg):
    """Per-key weights: row ``r`` of every per-key array belongs to key row ``r`` (``P[r]``: the key's
    readout matrix with ``rls``, ``[rows, 0]`` otherwise). Events are grouped
    by key (``order`` sorted stably by key, segment ``s`` = ``order[starts[s]:starts[s+1]]`` of key row
    ``keys[s]``); keys run in parallel, each key's events in their original order. ``traces`` holds
    each row's eligibility traces (``[rows, P]`` with ``traced``, else ``[rows, 0]``). ``Y`` and
    ``out`` are ``[N, T]``."""
    U = states.shape[1]
    width = np.max(lay[:, 1])
    for s in prange(starts.shape[0] - 1):
        r = keys[s]
        work, A = np.empty((lay.shape[0], W_ROWS, width)), np.empty(U)
        G = np.empty(theta.shape[1])
        NS, YS, RZ, RD = _event_scratch(X.shape[1], head[3], head[2])
        spare = np.zeros(traces.shape[1])  # the key's second trace buffer (see run_events)
        held = False
        status[s] = 0
        for q in range(starts[s], starts[s + 1]):
            n = order[q]
            if skip[n]:
                out[n, :] = np.nan
                continue
            cur, nxt = (spare, traces[r]) if held else (traces[r], spare)
            st = _event(theta[r], lay, head, fixed_gain, cfg, mode, bound, states[r], X[n], Y[n], out[n], learn,
                        kind, hyp, buf1[r], buf2[r], scal[r], xm[r], xm2[r], xws[r], xf, xe, xon,
                        ym[r], ym2[r], yws[r], yf, ye, yon, nclip, mon[r], mon_on, work, A, G, NS, YS,
                        traced, cur, nxt, rls, P[r], rcfg, RZ, RD)
            if st != 0:
                status[s] = st * 1_000_000_000 + n
                break
            if traced:
                held, cur = not held, nxt
            if ph_on and learn:
                e = _drift_error(out[n], Y[n], ym[r], ym2[r], yws[r], yf, ye, yon, YS)
                drifted[n] = _on_drift(ph[r], pcfg, e, states[r], cur, init,
                                       reset_state, reset_opt, kind, buf1[r], scal[r])
        if held:
            _copy(traces[r], spare)
        _rls_flush(P[r], RZ[2], RD)


@njit(nogil=True, **_KERNEL)  # releases the GIL: an Ensemble runs its members' loops in threads
def run_events(theta, lay, head, fixed_gain, cfg, mode, bound, states, traces, traced, rows, X, Y, learn, skip,
               kind, hyp, buf1, buf2, scal,
               xm, xm2, xws, xf, xe, xon, ym, ym2, yws, yf, ye, yon, nclip, mon, mon_on, out,
               ph, pcfg, ph_on, init, reset_state, reset_opt, drifted, rls, P, rcfg, snaps):
    """Walk events ``X[n], Y[n]`` in order with one set of weights (``P``: the readout matrix with
    ``rls``); event ``n`` uses the state row
    ``states[rows[n]]`` (one stream: a single row; shared weights across keys: one row per key).
    ``Y`` and ``out`` are ``[N, T]`` (``T`` outputs).
    Events with ``skip[n]`` are left out (prediction NaN, nothing changes). With ``ph_on``, each
    learned event's absolute error over the target scale feeds the Page-Hinkley detector of its
    state row (``ph[rows[n]]``); on drift ``drifted[n]`` is set and that row's state (and/or the
    optimiser) is reset before the next event. ``traces[rows[n]]`` are the row's eligibility traces
    (``[rows, P]`` with ``traced``, else ``[rows, 0]``). Returns
    (events done, status); a non-zero status stops at that event, unchanged. With ``snaps`` not empty
    (``[N, U + F + T]``), each event done writes what it saw there: the state before it (``U`` values,
    every layer's), its normalised input (``F``) and its row's traces before it (``T``: 0 unless
    traced), a snapshot from which it can be learned later (delayed labels: ``Core.learn_snapshots``).

    Traces have two buffers: a row's own and ``spare``. An event reads the current one and writes
    the advanced traces into the other (a failed update must leave them as they were), which then
    becomes current: swapping instead of copying back saves a pass over the traces every event
    (~0.5 us with oscillatory pairs, 10-32-32-1). ``held`` is the row whose current traces are in
    ``spare``; they go back to the row before another row's event and when the call ends."""
    U = states.shape[1]
    width = np.max(lay[:, 1])
    work, A = np.empty((lay.shape[0], W_ROWS, width)), np.empty(U)
    G = np.empty(theta.shape[0])
    NS, YS, RZ, RD = _event_scratch(X.shape[1], head[3], head[2])
    spare = np.zeros(traces.shape[1])
    held = -1
    done, status = X.shape[0], 0
    capture = snaps.shape[0] > 0
    F = X.shape[1]
    for n in range(X.shape[0]):
        if skip[n]:
            out[n, :] = np.nan
            continue
        r = rows[n]
        if held >= 0 and held != r:
            _copy(traces[held], spare)
            held = -1
        cur, nxt = (spare, traces[r]) if held == r else (traces[r], spare)
        if capture:
            for u in range(U):
                snaps[n, u] = states[r, u]
            for t in range(cur.shape[0]):
                snaps[n, U + F + t] = cur[t]
        status = _event(theta, lay, head, fixed_gain, cfg, mode, bound, states[r], X[n], Y[n], out[n], learn,
                        kind, hyp, buf1, buf2, scal, xm, xm2, xws, xf, xe, xon, ym, ym2, yws, yf, ye, yon, nclip,
                        mon, mon_on, work, A, G, NS, YS, traced, cur, nxt, rls, P, rcfg, RZ, RD)
        if status != 0:
            done = n
            break
        if capture:
            for j in range(F):
                snaps[n, U + j] = NS[0, j]
        if traced:
            held, cur = (-1 if held == r else r), nxt
        if ph_on and learn:
            e = _drift_error(out[n], Y[n], ym, ym2, yws, yf, ye, yon, YS)
            drifted[n] = _on_drift(ph[r], pcfg, e, states[r], cur, init,
                                   reset_state, reset_opt, kind, buf1, scal)
    if held >= 0:
        _copy(traces[held], spare)
    _rls_flush(P, RZ[2], RD)
    return done, status
