r"""Compiled (numba) SGD steps of an ensemble of tiny MLPs: the CPU route of
:class:`masktopo.search.ensemble.EnsembleTrainer`.

:func:`sgd_steps` takes ``steps`` steps of all ``B`` models within one epoch in one call: per
step, per model, it gathers the model's minibatch, runs the forward pass, the BCE-with-logits
gradient, the backward pass and the masked SGD update (momentum, weight decay) of every layer,
with the same formulas and the same float32 operations as the torch route
(:meth:`~masktopo.search.ensemble.EnsembleTrainer.step`), model after model. A model's tensors
(a few hundred bytes) and its activations (``128 × Σ d_l`` floats) stay in the L1 cache; the
torch route instead makes about a dozen passes over ``[B, d, 128]`` tensors per step, one
kernel launch each.

Activations are feature-major (``[d_l, n]``, one row per unit), so the inner loops run over the
``n`` points of the minibatch, contiguous, and vectorize; each model gathers its minibatch from
the data already put in the epoch's order (one strided pass, no index array). The sums over the
points (the weight and bias gradients) may be reassociated by the compiler (vectorized partial
sums): a rounding order fixed by the build and by ``n`` alone. A model's numbers therefore
depend only on its own tensors and data: the same bit for bit whichever other models share the
call (and whatever ``B``). They differ from the torch route's in the rounding order of these
sums, of the matrix products and of ``exp`` (a few float32 ulps per step).

The weights, biases, momentum buffers and masks arrive as tuples of arrays, one per layer
(``[B, d_l, d_{l-1}]`` and ``[B, d_l]``, float32, C-contiguous): numpy views of the trainer's
torch tensors, updated in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# IEEE semantics, no zero-division checks (the only division is by the batch size), cached to
# disk, without the GIL (the trainer runs chunks of models in threads).
_jit = njit(cache=True, error_model="numpy", nogil=True)
# Sums over the points may be reassociated (vectorized): deterministic for a given build.
_jit_sum = njit(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc"})


@_jit_sum
def _dot(u, v, n):
    """``Σ_{p<n} u[p]·v[p]`` (float32)."""
    total = np.float32(0.0)
    for p in range(n):
        total += u[p] * v[p]
    return total


@_jit_sum
def _sum(u, n):
    """``Σ_{p<n} u[p]`` (float32)."""
    total = np.float32(0.0)
    for p in range(n):
        total += u[p]
    return total


@_jit
def sgd_steps(
    xp, yp, a, c, lr, first, steps, batch_size, ws, bs, vws, vbs, wms, bms, momentum,
    weight_decay, record, gws,
):  # fmt: skip
    """Take ``steps`` SGD steps of every model: the minibatches ``first .. first+steps-1`` of
    one epoch.

    Parameters
    ----------
    xp, yp : ndarray
        The points (float32 ``[d_0, N]``, feature-major) and their labels (float32 ``[N]``) in
        the epoch's order :math:`P_e`: ``xp[:, r] = x[P_e[r]]``.
    a, c : ndarray
        int64 ``[B]``: model ``i`` visits ``xp[:, (a[i]·j + c[i]) mod N]``, ``j`` the position
        in the epoch.
    lr : ndarray
        float32 ``[B]``: each model's learning rate in this epoch.
    first, steps, batch_size : int
        The first minibatch (within the epoch), the number of steps, the minibatch size.
    ws, bs, vws, vbs, wms, bms : tuple of ndarray
        Per layer, float32: weights ``[B, d_l, d_{l-1}]``, biases ``[B, d_l]``, their momentum
        buffers and their masks (0 or 1); all but the masks are updated in place.
    momentum, weight_decay : numpy.float32
        SGD's :math:`\\mu` and :math:`\\lambda`.
    record : bool
        Write each layer's dense weight gradient (unmasked, before weight decay) of the last
        step into ``gws``.
    gws : tuple of ndarray
        ``[B, d_l, d_{l-1}]`` per layer, where ``record`` writes (not read otherwise).
    """
    n_layers = len(ws)
    n_data = xp.shape[1]
    n_models = a.shape[0]
    d0 = xp.shape[0]
    dmax = d0
    for layer in range(n_layers):
        dmax = max(dmax, ws[layer].shape[1])
    nb = batch_size
    acts = np.empty((n_layers + 1, dmax, nb), np.float32)  # each layer's input, then the logits
    grad = np.empty((2, dmax, nb), np.float32)  # dℓ/dz of a layer and of the layer below
    yb = np.empty(nb, np.float32)
    zero, one, fnb = np.float32(0.0), np.float32(1.0), np.float32(nb)
    last = n_layers - 1
    for s in range(steps):
        base = (first + s) * nb
        for m in range(n_models):
            # the minibatch: positions a·j + c (mod N), one addition each
            am = a[m]
            pos = (am * base + c[m]) % n_data
            for j in range(nb):
                for f in range(d0):
                    acts[0, f, j] = xp[f, pos]
                yb[j] = yp[pos]
                pos += am
                if pos >= n_data:
                    pos -= n_data
            # forward: z = W h + b, relu but at the last layer; one pass over the points per
            # weight (the first one storing), then one adding the bias
            for layer in range(n_layers):
                w, b = ws[layer], bs[layer]
                din = w.shape[2]
                for o in range(w.shape[1]):
                    out = acts[layer + 1, o]
                    wv, h = w[m, o, 0], acts[layer, 0]
                    for p in range(nb):
                        out[p] = wv * h[p]
                    for i in range(1, din):
                        wv, h = w[m, o, i], acts[layer, i]
                        for p in range(nb):
                            out[p] += wv * h[p]
                    bo = b[m, o]
                    if layer < last:
                        for p in range(nb):
                            v = out[p] + bo
                            out[p] = v if v > zero else zero
                    else:
                        for p in range(nb):
                            out[p] += bo
            # dℓ/ds of the mean BCE with logits: (σ(s) − y) / n
            logit, g = acts[n_layers, 0], grad[0, 0]
            for p in range(nb):
                g[p] = (one / (one + np.exp(-logit[p])) - yb[p]) / fnb
            # backward and the SGD update, last layer first
            cur = 0
            lrm = lr[m]
            for layer in range(last, -1, -1):
                w, b, vw, vb = ws[layer], bs[layer], vws[layer], vbs[layer]
                wm, bm = wms[layer], bms[layer]
                g, h = grad[cur], acts[layer]
                dout, din = w.shape[1], w.shape[2]
                if layer > 0:  # dℓ/dz below, through relu, with the weights before the update
                    below = grad[1 - cur]
                    for i in range(din):
                        row, hi = below[i], h[i]
                        wv, go = w[m, 0, i], g[0]
                        for p in range(nb):
                            row[p] = wv * go[p]
                        for o in range(1, dout):
                            wv, go = w[m, o, i], g[o]
                            for p in range(nb):
                                row[p] += wv * go[p]
                        for p in range(nb):
                            row[p] = row[p] if hi[p] > zero else zero
                for o in range(dout):
                    go = g[o]
                    for i in range(din):
                        gw = _dot(go, h[i], nb)
                        if record:
                            gws[layer][m, o, i] = gw
                        wv = w[m, o, i]
                        v = momentum * vw[m, o, i] + (gw + weight_decay * wv) * wm[m, o, i]
                        vw[m, o, i] = v
                        w[m, o, i] = wv - lrm * v
                    gb = _sum(go, nb)
                    bv = b[m, o]
                    v = momentum * vb[m, o] + (gb + weight_decay * bv) * bm[m, o]
                    vb[m, o] = v
                    b[m, o] = bv - lrm * v
                cur = 1 - cur
