"""Gravity forward model on a regular metric grid: layered density contrasts and Moho relief by FFT.

A density model is a stack of horizontal slices; slice ``[z1, z2]`` (depths below the observation plane,
positive down) holds a density contrast that varies across the grid but not within the slice. Each grid cell
of a slice is a right rectangular prism, and the vertical attraction of the whole slice is (Parker 1973,
first term; Blakely 1995, ch. 11)::

    F[g](k) = 2 pi G F[drho](k) S(k) (exp(-|k| z1) - exp(-|k| z2)) / |k|

where ``S(k) = sinc(kx dx / 2) sinc(ky dy / 2)`` is the Fourier transform of one cell's square footprint
(the difference between a prism and a point-sampled density) and the ``k = 0`` term is the Bouguer slab
``2 pi G drho (z2 - z1)``. The grid is padded with zero contrast so that the periodic images of the model
do not wrap round. SI units inside (kg/m^3, m, m/s^2); fields come out in mGal (1 mGal = 1e-5 m/s^2).

References
----------
Parker, R. L. (1973). The rapid calculation of potential anomalies. Geophys. J. R. astr. Soc. 31, 447-455.
Blakely, R. J. (1995). Potential Theory in Gravity and Magnetic Applications. Cambridge University Press.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.fft

#: Newtonian constant of gravitation (CODATA 2018), m^3 kg^-1 s^-2.
GRAVITATIONAL_CONSTANT = 6.6743e-11
#: 1 mGal in m/s^2.
MGAL = 1e-5
#: Reduction density of the Bouguer anomaly (WGM2012), kg/m^3.
REFERENCE_DENSITY = 2670.0


def wavenumbers(shape: tuple[int, int], spacing_m: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Angular wavenumbers of an ``rfft2`` of an array of ``shape`` (ny, nx), in rad per unit of the spacing
    ``(dy, dx)`` (rad/m here; :mod:`ggmnet.datasets.processing` passes km).

    Returns ``(ky, kx)`` shaped ``(ny, 1)`` and ``(1, nx // 2 + 1)`` for broadcasting.
    """
    ny, nx = shape
    dy, dx = spacing_m
    ky = 2 * np.pi * scipy.fft.fftfreq(ny, d=dy)[:, None]
    kx = 2 * np.pi * scipy.fft.rfftfreq(nx, d=dx)[None, :]
    return ky, kx


def _padded_shape(shape: tuple[int, int], pad: int) -> tuple[int, int]:
    return tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in shape)  # type: ignore[return-value]


def _pad_zero(values: np.ndarray, padded: tuple[int, int], pad: int) -> np.ndarray:
    out = np.zeros(padded, dtype=np.float64)
    out[pad:pad + values.shape[0], pad:pad + values.shape[1]] = values
    return out


def layered_gravity(slices: Iterable[tuple[float, float, np.ndarray]], spacing_m: tuple[float, float], *,
                    pad: int, observation_height_m: float = 0.0, workers: int = -1) -> np.ndarray:
    """Vertical attraction (mGal, positive for excess mass) of a stack of horizontal density slices.

    Parameters
    ----------
    slices
        ``(z_top_m, z_bottom_m, contrast)`` per slice: depths in m below the reference plane (positive down,
        ``z_bottom_m > z_top_m >= 0``) and the density contrast in kg/m^3, an array of shape ``(ny, nx)``
        (the same for every slice) whose cells are prisms of ``spacing_m``.
    spacing_m
        ``(dy, dx)``: cell size in m, north-south and east-west.
    pad
        Cells of zero contrast added on every side before the FFT (at least the distance over which the
        model's periodic images must not be felt; a few more on the far sides, up to a fast FFT length).
    observation_height_m
        Height of the observation plane above the reference plane (m, >= 0).
    workers
        Threads for ``scipy.fft`` (-1: all).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64, mGal, on the cell centres at ``observation_height_m``.
    """
    total = None
    shape = None
    decay: dict[float, np.ndarray] = {}
    for z_top, z_bottom, contrast in slices:
        if not 0.0 <= z_top < z_bottom:
            raise ValueError(f"slice [{z_top}, {z_bottom}] m: expected 0 <= top < bottom")
        if shape is None:
            shape = contrast.shape
            padded = _padded_shape(shape, pad)
            ky, kx = wavenumbers(padded, spacing_m)
            k = np.hypot(ky, kx)
            # Footprint of one cell (np.sinc(x) = sin(pi x) / (pi x)) and the observation height.
            common = (np.sinc(ky * spacing_m[0] / (2 * np.pi)) * np.sinc(kx * spacing_m[1] / (2 * np.pi))
                      * np.exp(-k * observation_height_m))
            k_safe = np.where(k > 0, k, 1.0)
            total = np.zeros(k.shape, dtype=np.complex128)
        elif contrast.shape != shape:
            raise ValueError(f"slice contrast shape {contrast.shape} differs from {shape}")
        # exp(-k z) at each depth is computed once (a slice's bottom is usually the next one's top).
        top = decay.pop(z_top) if z_top in decay else np.exp(-k * z_top)
        decay = {z_bottom: np.exp(-k * z_bottom)}
        kernel = (top - decay[z_bottom]) / k_safe
        kernel[0, 0] = z_bottom - z_top
        total += scipy.fft.rfft2(_pad_zero(contrast, padded, pad), workers=workers) * kernel
    if total is None:
        raise ValueError("layered_gravity needs at least one slice")
    field = scipy.fft.irfft2(total * common, s=padded, workers=workers)
    field = field[pad:pad + shape[0], pad:pad + shape[1]]
    return 2 * np.pi * GRAVITATIONAL_CONSTANT * field / MGAL


def moho_gravity(moho_depth_m: np.ndarray, spacing_m: tuple[float, float], *, density_contrast: float = 450.0,
                 pad: int, workers: int = -1) -> np.ndarray:
    """Attraction (mGal) of Moho relief about its mean depth, by the first term of Parker's series.

    ``F[g] = 2 pi G drho exp(-|k| z0) F[z0 - z]`` with ``z0`` the mean depth: a shallower Moho (mantle rising
    into the crust) gives a positive anomaly, and the result's mean is close to zero. The relief is padded by
    reflection (it is smooth), so the grid's edges make no step.

    Parameters
    ----------
    moho_depth_m
        ``(ny, nx)`` depth of the crust-mantle boundary below the observation plane, m.
    spacing_m
        ``(dy, dx)``, m.
    density_contrast
        Mantle minus crust density, kg/m^3.
    pad
        Cells of reflected relief added on every side (a few more on the far sides, up to a fast FFT length).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64, mGal.
    """
    shape = np.shape(moho_depth_m)
    padded = _padded_shape(shape, pad)
    widths = [(pad, size - n - pad) for n, size in zip(shape, padded)]
    depth = np.pad(np.asarray(moho_depth_m, dtype=np.float64), widths, mode="reflect")
    z0 = float(depth.mean())
    ky, kx = wavenumbers(padded, spacing_m)
    spectrum = scipy.fft.rfft2(z0 - depth, workers=workers) * np.exp(-np.hypot(ky, kx) * z0)
    field = scipy.fft.irfft2(spectrum, s=padded, workers=workers)[pad:pad + shape[0], pad:pad + shape[1]]
    return 2 * np.pi * GRAVITATIONAL_CONSTANT * density_contrast * field / MGAL
