"""The FFT forward model against prisms (harmonica), the Bouguer slab and Parker's formula on a sinusoid."""

from __future__ import annotations

import numpy as np
import pytest

from ggmnet.datasets.forward import GRAVITATIONAL_CONSTANT, MGAL, layered_gravity, moho_gravity

#: 2 pi G x 1000 kg/m^3 x 1000 m, in mGal: the Bouguer slab of the brief (41.9 mGal).
SLAB_1KM_1000 = 2 * np.pi * GRAVITATIONAL_CONSTANT * 1000.0 * 1000.0 / MGAL


def test_slab_limit_is_exact_without_padding():
    """A laterally uniform slab (periodic grid, k = 0 term) gives 2 pi G drho t at any depth."""
    assert SLAB_1KM_1000 == pytest.approx(41.93, abs=0.01)
    contrast = np.full((32, 48), 1000.0)
    shallow = layered_gravity([(0.0, 1000.0, contrast)], (2000.0, 3000.0), pad=0)
    deep = layered_gravity([(2000.0, 2500.0, contrast), (2500.0, 3000.0, contrast)], (2000.0, 3000.0), pad=0)
    np.testing.assert_allclose(shallow, SLAB_1KM_1000, rtol=1e-9)
    np.testing.assert_allclose(deep, SLAB_1KM_1000, rtol=1e-9)


def test_wide_padded_slab_approaches_the_slab_limit():
    """A 400 km x 400 km slab in zero-contrast padding: near the slab value at the centre."""
    contrast = np.full((200, 200), 1000.0)
    centre = layered_gravity([(0.0, 1000.0, contrast)], (2000.0, 2000.0), pad=100)[100, 100]
    assert centre == pytest.approx(SLAB_1KM_1000, rel=0.01)
    assert centre < SLAB_1KM_1000


def _half_slab_2d(u_m: np.ndarray, top_m: float, bottom_m: float, drho: float) -> np.ndarray:
    """Attraction (mGal) of a 2-D slab ``[top, bottom]`` filling ``u' > 0``, observed at horizontal offset ``u``.

    Sum of semi-infinite sheets: ``2 G drho int (pi / 2 + arctan(u / z)) dz``, and
    ``int arctan(u / z) dz = z arctan(u / z) + (u / 2) ln(u^2 + z^2)``.
    """
    def antiderivative(z):
        return np.pi / 2 * z + z * np.arctan2(u_m, z) + 0.5 * u_m * np.log(u_m**2 + z**2)

    return 2 * GRAVITATIONAL_CONSTANT * drho * (antiderivative(bottom_m) - antiderivative(top_m)) / MGAL


def test_slab_edge_matches_the_2d_analytic_profile():
    """Across the straight edge of a wide slab (observed 2 km above it) the field follows the 2-D formula."""
    contrast = np.zeros((200, 200))
    contrast[:, 100:] = 1000.0
    field = layered_gravity([(0.0, 1000.0, contrast)], (2000.0, 2000.0), pad=100, observation_height_m=2000.0)
    columns = np.arange(85, 116)
    offset = (columns + 0.5) * 2000.0 - 200_000.0
    expected = _half_slab_2d(offset, 2000.0, 3000.0, 1000.0)
    np.testing.assert_allclose(field[100, columns], expected, atol=0.01 * SLAB_1KM_1000)
    assert expected[0] < 0.1 * SLAB_1KM_1000 and expected[-1] > 0.9 * SLAB_1KM_1000


def test_slices_match_harmonica_prisms():
    """Random 3-layer block model (432 prisms, 1 x 1.5 km cells): FFT vs prism_gravity within 2 % RMS."""
    hm = pytest.importorskip("harmonica")
    rng = np.random.default_rng(3)
    dy, dx = 1500.0, 1000.0
    ny, nx, inner = 20, 22, 12
    edges = np.array([0.0, 400.0, 1500.0, 3000.0])
    contrast = np.zeros((3, ny, nx))
    r0, c0 = (ny - inner) // 2, (nx - inner) // 2
    contrast[:, r0:r0 + inner, c0:c0 + inner] = rng.normal(0.0, 200.0, (3, inner, inner))

    rows, cols = np.meshgrid(np.arange(r0, r0 + inner), np.arange(c0, c0 + inner), indexing="ij")
    prisms, densities = [], []
    for layer in range(3):
        west, south = cols.ravel() * dx, rows.ravel() * dy
        block = np.column_stack([west, west + dx, south, south + dy, np.full(west.size, -edges[layer + 1]),
                                 np.full(west.size, -edges[layer])])
        prisms.append(block)
        densities.append(contrast[layer, rows, cols].ravel())
    height = 1200.0
    easting, northing = np.meshgrid((np.arange(nx) + 0.5) * dx, (np.arange(ny) + 0.5) * dy)
    reference = hm.prism_gravity((easting, northing, np.full_like(easting, height)), np.concatenate(prisms),
                                 np.concatenate(densities), field="g_z", parallel=False)

    fft = layered_gravity([(edges[i], edges[i + 1], contrast[i]) for i in range(3)], (dy, dx), pad=40,
                          observation_height_m=height)
    rms_error = np.sqrt(np.mean((fft - reference) ** 2))
    signal = np.sqrt(np.mean(reference**2))
    assert signal > 0.5
    assert rms_error < 0.02 * signal


def test_moho_first_order_parker_on_a_sinusoid():
    """Relief a cos(k x) about z0 gives 2 pi G drho a exp(-k z0) cos(k x); a shallower Moho is positive."""
    nx, ny, spacing, pad = 65, 8, 5000.0, 95
    x = np.arange(nx) * spacing
    # Extrema at both ends, so reflection continues the cosine; with the padding the FFT length (256) holds
    # whole periods, so the answer is exact.
    wavelength = (nx - 1) * spacing / 2
    k = 2 * np.pi / wavelength
    amplitude, z0 = 3000.0, 40000.0
    depth = np.repeat(z0 - amplitude * np.cos(k * x)[None, :], ny, axis=0)
    field = moho_gravity(depth, (spacing, spacing), density_contrast=450.0, pad=pad)
    expected = 2 * np.pi * GRAVITATIONAL_CONSTANT * 450.0 * amplitude * np.exp(-k * z0) * np.cos(k * x) / MGAL
    np.testing.assert_allclose(field, np.broadcast_to(expected, field.shape), atol=1e-6 * np.abs(expected).max())
    assert field[0, 0] > 5.0  # x = 0: the Moho is shallowest there


def test_layered_gravity_rejects_bad_slices():
    with pytest.raises(ValueError, match="top < bottom"):
        layered_gravity([(1000.0, 500.0, np.zeros((4, 4)))], (1.0, 1.0), pad=0)
    with pytest.raises(ValueError, match="shape"):
        layered_gravity([(0.0, 1.0, np.zeros((4, 4))), (1.0, 2.0, np.zeros((4, 5)))], (1.0, 1.0), pad=0)
