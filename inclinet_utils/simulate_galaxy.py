"""Stage 00, the galaxy itself: smooth components (disk, bulge, bar, dust lane), arms and knots.

Each smooth component is a GalSim profile drawn once at unit colour through the
seeing PSF (`SmoothImages`); the bands differ only by the components' fluxes
(`ComponentFluxes`), so a redder bulge or bluer knots cost no extra FFTs. The
spiral arms and star-forming knots are clouds of point-like particles in the disk
plane, projected onto the sky and added to the frame's `PointLight`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np

from .simulate_observe import BANDS, GSPARAMS, Frame, PointLight, band_flux, mag_to_nmgy

# Structure of the arms and knots (in disk scale lengths h unless named otherwise).
ARM_PARTICLES = 12000           # enough that their discreteness is far below the sky noise
ARM_WIDTH_H = (0.15, 0.35)      # Gaussian half width of an arm
FLOCCULENT_SEGMENTS = 12        # short arm segments of a flocculent disk
KNOTS_ON_ARMS = 0.7             # fraction of knots on the arms; the rest follow the disk
KNOT_PARTICLES = 8              # each knot is a small cluster of particles ...
KNOT_SIZE_ARCSEC = (0.4, 1.2)   # ... of this Gaussian size (HII complexes of a few hundred pc)
KNOT_LUMINOSITY_RANGE = 10.0    # brightest / faintest knot, dN/dL ~ L^-2
LANE_THICKNESS = 0.4            # dust lane scale height / the stellar one


@dataclass(frozen=True)
class Geometry:
    """Size and orientation of one galaxy in its cutout (angles in radians, sizes in arcsec)."""
    inc: float
    h: float                    # disk scale length
    hz: float                   # disk scale height
    r25: float                  # isophotal radius
    field: float                # side of the 2 x D25 cutout
    rot: galsim.Angle           # residual angle of the major axis in the rotated cutout
    dx: float                   # centring error
    dy: float

    @classmethod
    def of(cls, p) -> "Geometry":
        return cls(inc=math.radians(p["inc_true"]), h=p["h_arcsec"], hz=p["hz_hr"] * p["h_arcsec"],
                   r25=p["d25"] * 30.0, field=2.0 * p["d25"] * 60.0, rot=galsim.Angle(p["pa_img"], galsim.degrees), dx=p["dx"], dy=p["dy"])

    @property
    def cos_i(self) -> float:
        return math.cos(self.inc)

    @property
    def sin_i(self) -> float:
        return math.sin(self.inc)

    def place(self, obj: galsim.GSObject) -> galsim.GSObject:
        """A sky-plane profile rotated and shifted to its place in the cutout."""
        return obj.rotate(self.rot).shift(galsim.PositionD(self.dx, self.dy))

    def disk_to_pix(self, x, y, z_scale, frame: Frame, rng):
        """Disk-plane positions (arcsec) with Laplace heights of scale `z_scale` -> cutout pixels."""
        cr, sr = math.cos(self.rot.rad), math.sin(self.rot.rad)
        ys = y * self.cos_i + rng.laplace(0, z_scale, x.size) * self.sin_i   # inclined about the x axis
        return ((x * cr - ys * sr + self.dx) / frame.scale + frame.c,
                (x * sr + ys * cr + self.dy) / frame.scale + frame.c)


@dataclass(frozen=True)
class ComponentFluxes:
    """(g, r, i) fluxes in nanomaggies: disk, arms and knots in total, the old stellar
    population (bulge and bar) per unit r flux, and the dust lane's absorbed fraction."""
    disk: dict
    old: dict
    arm: dict
    knot: dict
    lane: dict

    @classmethod
    def of(cls, p) -> "ComponentFluxes":
        disk_r = 2 * np.pi * p["h_arcsec"] ** 2 * mag_to_nmgy(p["mu0_r"])
        bar_r, arm_r, knot_r = (disk_r * p[k] for k in ("bar_frac", "arm_frac", "knot_frac"))
        return cls(disk=band_flux(disk_r - bar_r - arm_r - knot_r, p["gr_disk"], p["ri_disk"]),
                   old=band_flux(1.0, p["gr_bulge"], p["ri_bulge"]),
                   arm=band_flux(arm_r, p["gr_disk"] - 0.2, p["ri_disk"] - 0.1),
                   knot=band_flux(knot_r, p["gr_knot"], p["ri_knot"]),
                   lane={"g": min(1.35 * p["dust_a"], 0.9), "r": p["dust_a"], "i": 0.75 * p["dust_a"]})


@dataclass
class SmoothImages:
    """Unit-colour images of the smooth components; None for a component the galaxy lacks."""
    disk: np.ndarray
    old: np.ndarray | None      # bulge + bar, r flux in nmgy
    lane: np.ndarray | None     # dust lane, unit flux

    def add_band(self, model: np.ndarray, b: str, f: ComponentFluxes) -> None:
        """Add the smooth light of band `b` to the float32 image `model` (nmgy / pixel), in place."""
        model += np.float32(f.disk[b]) * self.disk
        if self.old is not None:
            model += np.float32(f.old[b]) * self.old
        if self.lane is not None:
            model -= np.float32(f.lane[b] * f.disk[b]) * self.lane


def smooth_components(p, geo: Geometry, frame: Frame) -> SmoothImages:
    """Thick inclined exponential disk, oblate Sersic bulge and projected bar, and dust lane."""
    disk = galsim.InclinedExponential(geo.inc * galsim.radians, scale_radius=geo.h, scale_height=geo.hz,
                                      gsparams=GSPARAMS)
    old = _old_population(p, geo)
    lane_img = None
    if p["dust_a"] > 0:
        # A thin layer with the disk's radial profile; subtracting it removes fraction
        # dust_a of the light at the midplane.
        lane = galsim.InclinedExponential(geo.inc * galsim.radians, scale_radius=geo.h,
                                          scale_height=LANE_THICKNESS * geo.hz, gsparams=GSPARAMS)
        lane_img = frame.draw(geo.place(lane)) * LANE_THICKNESS
    return SmoothImages(disk=frame.draw(geo.place(disk)),
                        old=None if old is None else frame.draw(geo.place(old)), lane=lane_img)


def _old_population(p, geo: Geometry) -> galsim.GSObject | None:
    """Bulge and bar (r fluxes in nmgy), or None when the galaxy has neither."""
    disk_r = 2 * np.pi * geo.h ** 2 * mag_to_nmgy(p["mu0_r"])
    bulge_r = disk_r * p["bt"] / (1.0 - p["bt"])
    bar_r = disk_r * p["bar_frac"]
    parts = []
    if bulge_r > 0:
        # Oblate spheroid of intrinsic flattening q0 seen at inclination i.
        q_b = math.sqrt(geo.cos_i ** 2 + (p["q0_bulge"] * geo.sin_i) ** 2)
        parts.append(galsim.Sersic(n=float(p["n_bulge"]), half_light_radius=p["re_arcsec"], flux=bulge_r,
                                   gsparams=GSPARAMS).shear(q=q_b, beta=0 * galsim.degrees))
    if bar_r > 0:
        # Bar in the disk plane at bar_angle, projected; vertically thick (boxy/peanut).
        bar = galsim.Sersic(n=0.6, half_light_radius=0.5 * p["bar_len_h"] * geo.h, gsparams=GSPARAMS)
        bar = bar.shear(q=p["bar_q"], beta=p["bar_angle"] * galsim.degrees)
        q_proj = math.sqrt(geo.cos_i ** 2 + (0.35 * geo.sin_i) ** 2)
        parts.append(bar.transform(1.0, 0.0, 0.0, q_proj).withFlux(bar_r))
    return galsim.Add(parts) if parts else None


def add_arms_and_knots(points: PointLight, p, geo: Geometry, f: ComponentFluxes, frame: Frame, rng,
                       deviate: galsim.BaseDeviate) -> None:
    """Add the spiral arms and star-forming knots of galaxy `p` to `points` (numpy
    stream `rng`; GalSim stream `deviate` for the knots off the arms)."""
    arms = _arm_layout(p, geo.h, rng)
    ax, ay = arms.sample(ARM_PARTICLES, arms.width, rng)
    aw = np.full(ax.size, 1.0 / ax.size)
    kx, ky, kw = _knots(p, arms, geo.h, rng, deviate)
    points.add(*geo.disk_to_pix(ax, ay, 0.4 * geo.hz, frame, rng), {b: aw * f.arm[b] for b in BANDS})
    points.add(*geo.disk_to_pix(kx, ky, 0.3 * geo.hz, frame, rng), {b: kw * f.knot[b] for b in BANDS})


@dataclass
class _Arms:
    """Log-spiral arm segments in the disk plane: 2-4 arms, or flocculent pieces (n_arms 0)."""
    n_arms: int
    h: float
    r_in: float
    tan_pitch: float
    phase: np.ndarray
    seg_r: np.ndarray | None    # flocculent segments: centre radius and length
    seg_len: np.ndarray | None
    wig_amp: np.ndarray
    wig_len: np.ndarray
    wig_phase: np.ndarray
    width: float

    def sample(self, n_pts, scatter, rng):
        """In-plane (x, y) of `n_pts` particles spread over the arms with Gaussian `scatter`."""
        k = rng.integers(0, self.phase.size, n_pts)
        if self.n_arms == 0:
            r = self.seg_r[k] + rng.uniform(-0.5, 0.5, n_pts) * self.seg_len[k]
        else:
            r = self.r_in + rng.gamma(2.0, 0.8 * self.h, n_pts)
        r = np.clip(r, 0.5 * self.r_in, 4.5 * self.h)
        theta = (self.phase[k] + np.log(r / self.r_in) / self.tan_pitch
                 + self.wig_amp[k] * np.sin(2 * np.pi * r / self.wig_len[k] + self.wig_phase[k]))
        s = scatter * np.sqrt(np.clip(r / self.h, 0.3, 3.0))   # arms widen outwards
        return (r * np.cos(theta) + rng.normal(0, 1, n_pts) * s,
                r * np.sin(theta) + rng.normal(0, 1, n_pts) * s)


def _arm_layout(p, h, rng) -> _Arms:
    """Arms starting at the bar ends or inside the disk, with wiggles and a spread in width."""
    n_arms = int(p["n_arms"])
    if p["bar"]:
        r_in, phase0 = p["bar_len_h"] * h, math.radians(p["bar_angle"])
    else:
        r_in, phase0 = rng.uniform(0.3, 0.9) * h, rng.uniform(0, 2 * np.pi)
    n_seg = n_arms if n_arms > 0 else FLOCCULENT_SEGMENTS
    phase = phase0 + 2 * np.pi * np.arange(n_seg) / n_seg
    seg_r = seg_len = None
    if n_arms == 0:   # flocculent: short arm segments at random phases and radii
        phase = rng.uniform(0, 2 * np.pi, n_seg)
        seg_r = r_in + rng.gamma(2.0, 0.8 * h, n_seg)
        seg_len = rng.uniform(0.6, 1.4, n_seg) * h
    return _Arms(n_arms=n_arms, h=h, r_in=r_in, tan_pitch=math.tan(math.radians(p["pitch_deg"])), phase=phase,
                 seg_r=seg_r, seg_len=seg_len, wig_amp=rng.uniform(0.05, 0.25, n_seg),
                 wig_len=rng.uniform(0.8, 2.0, n_seg) * h, wig_phase=rng.uniform(0, 2 * np.pi, n_seg),
                 width=rng.uniform(*ARM_WIDTH_H) * h)


def _knots(p, arms: _Arms, h, rng, deviate: galsim.BaseDeviate):
    """In-plane (x, y, weight) of the knot particles: HII complexes, mostly on the arms,
    the others following the disk (``galsim.RandomKnots`` of the face-on exponential),
    with the HII-region luminosity function dN/dL ~ L^-2; weights sum to 1."""
    nk = int(p["n_knots"])
    n_on = int(round(KNOTS_ON_ARMS * nk))
    kx, ky = arms.sample(n_on, 0.4 * arms.width, rng)
    if nk > n_on:
        off = galsim.RandomKnots(nk - n_on, profile=galsim.Exponential(scale_radius=h), rng=deviate).points
        kx, ky = np.concatenate([kx, off[:, 0]]), np.concatenate([ky, off[:, 1]])
    lum = 1.0 / rng.uniform(1.0 / KNOT_LUMINOSITY_RANGE, 1.0, kx.size)
    size = rng.uniform(*KNOT_SIZE_ARCSEC, kx.size)
    n_sub = KNOT_PARTICLES
    kx = (kx[:, None] + rng.normal(0, 1, (kx.size, n_sub)) * size[:, None]).ravel()
    ky = (ky[:, None] + rng.normal(0, 1, (ky.size, n_sub)) * size[:, None]).ravel()
    kw = np.repeat(lum / max(lum.sum(), 1e-30) / n_sub, n_sub)
    return kx, ky, kw
