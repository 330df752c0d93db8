"""Enumeration of supports (methods-spec §7.3): counts, canonical form, keys, phase 1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from masktopo.errors import MaskValidationError
from masktopo.search import (
    SupportKey,
    block_masks,
    count_matrix_supports,
    count_supports,
    joint_indices,
    matrix_supports,
    phase1_archs,
    support_masks,
    supports,
)
from masktopo.search.enumerate import support_weight_nnz


def test_the_reference_counts():
    assert count_supports((2, 3, 3, 3, 1)) == 25992
    assert count_supports("2-3-2-2-1") == 416
    assert (count_matrix_supports(3, 2), count_matrix_supports(3, 3)) == (8, 57)
    assert count_supports((2, 3, 3, 3, 1)) * 6 == 155952  # phase-2 runs of the paper


@pytest.mark.parametrize("rows,cols", [(3, 2), (3, 3), (2, 3), (2, 2), (4, 2), (1, 4)])
def test_matrix_supports_are_every_canonical_support_once(rows, cols):
    """Brute force over every bool matrix: the canonical representatives of the row-permutation
    classes with no empty row or column are exactly the listed supports."""
    listed = matrix_supports(rows, cols)
    assert len(listed) == count_matrix_supports(rows, cols)
    weights = 1 << np.arange(cols - 1, -1, -1)
    classes = set()
    for bits in itertools.product((0, 1), repeat=rows * cols):
        m = np.array(bits, dtype=bool).reshape(rows, cols)
        if m.any(1).all() and m.any(0).all():
            vals = (m * weights).sum(1)
            classes.add(tuple(sorted(vals, key=lambda v: (-int(v).bit_count(), v))))
    assert {tuple(r) for r in listed.tolist()} == classes
    nnz = [sum(int(v).bit_count() for v in r) for r in listed]
    assert nnz == sorted(nnz)  # listed by nnz


def test_every_support_has_no_empty_row_or_column_and_is_canonical():
    arch = (2, 3, 3, 3, 1)
    masks = support_masks(arch, np.arange(count_supports(arch)))
    for layer in masks:
        assert layer.any(axis=2).all() and layer.any(axis=1).all()
    for layer in masks[:-1]:  # rows: nnz non-increasing, then value non-decreasing
        w = 1 << np.arange(layer.shape[2] - 1, -1, -1)
        val, nnz = (layer * w).sum(2), layer.sum(2)
        key = -nnz * (1 << layer.shape[2]) + val
        assert (np.diff(key, axis=1) >= 0).all()
    flat = np.concatenate([m.reshape(len(m), -1) for m in masks], axis=1)
    assert len(np.unique(flat, axis=0)) == len(flat)  # all distinct
    assert masks[-1].all()  # the classifier stays dense


def test_keys_rebuild_the_masks_deterministically():
    arch = (2, 3, 2, 2, 1)
    keys = list(supports(arch))
    assert [k.index for k in keys] == list(range(416))
    stacked = support_masks(arch, [k.index for k in keys])
    for k in keys[::37]:
        again = SupportKey.parse(str(k))
        assert again == k
        for a, b in zip(again.masks(), stacked, strict=True):
            np.testing.assert_array_equal(a, b[k.index])
        assert sum(m.sum() for m in k.masks()) == support_weight_nnz(arch, [k.index])[0]
    # index order is the reference's loop order: per-layer nnz budgets, then masks
    budgets = [k.layer_nnz for k in keys]
    assert budgets == sorted(budgets)
    with pytest.raises(MaskValidationError):
        SupportKey(arch, 416)


def _orbits(arch):
    forms = set()
    for k in supports(arch):
        ms = k.masks()
        best = None
        for ps in itertools.product(*(itertools.permutations(range(d)) for d in arch[1:-1])):
            enc = b""
            for i, m in enumerate(ms[:-1]):
                m = m[list(ps[i])]
                if i > 0:
                    m = m[:, list(ps[i - 1])]
                enc += np.packbits(m).tobytes()
            best = enc if best is None or enc < best else best
        forms.add(best)
    return len(forms)


@pytest.mark.parametrize("arch", [(2, 3, 2, 2, 1), (2, 2, 3, 2, 1)])
def test_joint_canonicalisation_keeps_one_network_per_orbit(arch):
    idx = joint_indices(arch)
    assert len(idx) == count_supports(arch, joint=True) == _orbits(arch)
    assert (np.diff(idx) > 0).all()
    assert [k.index for k in supports(arch, joint=True)] == idx.tolist()


def test_joint_count_of_2_3_3_3_1_is_documented():
    assert count_supports((2, 3, 3, 3, 1), joint=True) == 12400


def test_phase1_architectures_and_block_masks():
    archs = phase1_archs(16)
    assert len(archs) == 4096 and len(set(archs)) == 4096
    wm, bm = block_masks([(2, 3, 5, 1, 1), (2, 16, 16, 16, 1)], 16)
    assert [m.shape for m in wm] == [(2, 16, 2), (2, 16, 16), (2, 16, 16), (2, 1, 16)]
    assert [int(m[0].sum()) for m in wm] == [6, 15, 5, 1]
    assert [int(b[0].sum()) for b in bm] == [3, 5, 1, 1]
    assert all(m[1].all() for m in wm)
    with pytest.raises(MaskValidationError):
        block_masks([(2, 17, 1, 1, 1)], 16)
