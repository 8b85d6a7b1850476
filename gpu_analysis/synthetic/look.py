"""How a rendered match looks: kits, grass, stands, lighting and image degradations.

`default_look()` is the stable look of tests and demos; `random_look(rng)` is the domain
randomization used to train the built-in model (it must not learn one look).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

RGB = tuple[int, int, int]

SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 134, 96),
    (161, 102, 68),
    (120, 76, 50),
    (88, 54, 36),
)
HAIR_COLOURS: tuple[RGB, ...] = ((30, 22, 18), (70, 45, 25), (120, 80, 40), (200, 170, 110))


# The colours referees' shirts come in: black, yellow, pink, green, light blue, red, orange.
_REFEREE_SHIRTS: tuple[RGB, ...] = (
    (18, 18, 18),
    (235, 225, 30),
    (240, 90, 170),
    (120, 230, 60),
    (90, 190, 240),
    (210, 20, 30),
    (245, 130, 20),
)


@dataclass(frozen=True)
class Kit:
    shirt: RGB
    shorts: RGB
    socks: RGB
    sleeve: RGB | None = None  # None: same as shirt
    stripe: RGB | None = None  # vertical shirt stripes, if any


@dataclass(frozen=True)
class Look:
    kits: tuple[Kit, Kit]
    goalkeeper_kits: tuple[Kit, Kit]
    grass: tuple[RGB, RGB]  # the two mowing-stripe greens
    stripe_width_m: float
    line_rgb: RGB
    line_width_m: float
    sky_rgb: RGB
    crowd_palette: tuple[RGB, ...]
    board_palette: tuple[RGB, ...]
    player_height_m: tuple[float, float]  # min, max
    sun_direction: tuple[float, float]  # shadow offset direction in image units (x, y)
    shadow_strength: float  # 0 = none, 1 = black
    brightness: float  # multiplies the whole frame
    blur_sigma_px: float  # optics: 0 = sharp
    motion_blur_px: int  # camera shake: length of a linear blur kernel, 0 = none
    motion_blur_angle_deg: float
    noise_sigma: float  # sensor noise, in 0..255 units
    crf: int  # H.264 quality: higher = stronger compression artefacts
    grass_texture: float  # strength of low-frequency grass mottling
    extras: dict = field(default_factory=dict)

    @property
    def official_kit(self) -> Kit:
        """The referees' kit: the referee colour farthest from both teams', both goalkeepers'
        and the grass, as match officials choose theirs (no random draw, so adding officials
        to a clip changes nothing else about its look)."""
        taken = [k.shirt for k in (*self.kits, *self.goalkeeper_kits)] + list(self.grass)
        shirt = max(
            _REFEREE_SHIRTS, key=lambda c: min(_colour_distance(c, other) for other in taken)
        )
        return Kit(shirt=shirt, shorts=(15, 15, 15), socks=(15, 15, 15))


def default_look() -> Look:
    """Red versus blue-and-white, a sunny afternoon, broadcast quality."""
    return Look(
        kits=(
            Kit(shirt=(200, 30, 35), shorts=(235, 235, 235), socks=(200, 30, 35)),
            Kit(
                shirt=(25, 65, 215),
                shorts=(240, 240, 245),
                socks=(240, 240, 245),
                stripe=(240, 240, 245),
            ),
        ),
        goalkeeper_kits=(
            Kit(shirt=(60, 200, 80), shorts=(20, 20, 20), socks=(60, 200, 80)),
            Kit(shirt=(240, 200, 40), shorts=(20, 20, 20), socks=(240, 200, 40)),
        ),
        grass=((62, 140, 58), (74, 158, 66)),
        stripe_width_m=5.25,
        line_rgb=(235, 240, 235),
        line_width_m=0.12,
        sky_rgb=(150, 180, 215),
        crowd_palette=((40, 40, 50), (180, 40, 40), (220, 220, 220), (40, 60, 160), (90, 90, 90)),
        board_palette=((20, 40, 140), (200, 30, 30), (245, 245, 245), (20, 20, 20), (240, 180, 0)),
        player_height_m=(1.70, 1.92),
        sun_direction=(0.5, 0.15),
        shadow_strength=0.35,
        brightness=1.0,
        blur_sigma_px=0.0,
        motion_blur_px=0,
        motion_blur_angle_deg=0.0,
        noise_sigma=2.0,
        crf=23,
        grass_texture=0.06,
    )


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (int(r * 255), int(g * 255), int(b * 255))


def _random_colour(rng: np.random.Generator) -> RGB:
    kind = rng.random()
    if kind < 0.15:
        v = rng.choice([0.08, 0.95])  # black or white kits
        return _hsv(0, 0, v + rng.normal(0, 0.03))
    return _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))


def _colour_distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _random_kit(rng: np.random.Generator, avoid: list[RGB]) -> Kit:
    for _ in range(100):
        shirt = _random_colour(rng)
        if all(_colour_distance(shirt, c) > 120 for c in avoid):
            break
    shorts = shirt if rng.random() < 0.3 else _random_colour(rng)
    socks = shirt if rng.random() < 0.5 else shorts
    sleeve = _random_colour(rng) if rng.random() < 0.2 else None
    stripe = _random_colour(rng) if rng.random() < 0.2 else None
    return Kit(shirt, shorts, socks, sleeve, stripe)


def random_look(rng: np.random.Generator) -> Look:
    """A randomized look: any kits (teams kept apart), grass, light, blur, noise, compression."""
    grass_h = rng.uniform(0.22, 0.36)
    grass_s = rng.uniform(0.35, 0.75)
    grass_v = rng.uniform(0.35, 0.7)
    dv = rng.uniform(0.0, 0.12)
    grass_a = _hsv(grass_h, grass_s, grass_v)
    grass_b = _hsv(grass_h + rng.normal(0, 0.01), grass_s, grass_v + dv)
    kit0 = _random_kit(rng, [grass_a])
    kit1 = _random_kit(rng, [grass_a, kit0.shirt])
    gk0 = _random_kit(rng, [grass_a, kit0.shirt, kit1.shirt])
    gk1 = _random_kit(rng, [grass_a, kit0.shirt, kit1.shirt])
    crowd = tuple(_random_colour(rng) for _ in range(int(rng.integers(3, 8))))
    boards = tuple(_random_colour(rng) for _ in range(int(rng.integers(2, 7))))
    angle = rng.uniform(0, 2 * np.pi)
    short = rng.uniform(1.55, 1.75)
    return Look(
        kits=(kit0, kit1),
        goalkeeper_kits=(gk0, gk1),
        grass=(grass_a, grass_b),
        stripe_width_m=float(rng.choice([4.0, 5.0, 5.25, 6.0, 7.5, 1e6])),
        line_rgb=_hsv(0, 0, rng.uniform(0.8, 1.0)),
        line_width_m=rng.uniform(0.10, 0.15),
        sky_rgb=_hsv(rng.uniform(0.5, 0.7), rng.uniform(0, 0.5), rng.uniform(0.2, 0.95)),
        crowd_palette=crowd,
        board_palette=boards,
        player_height_m=(short, short + rng.uniform(0.1, 0.35)),
        sun_direction=(float(np.cos(angle)), float(np.sin(angle) * 0.4)),
        shadow_strength=rng.uniform(0.0, 0.6),
        brightness=rng.uniform(0.7, 1.25),
        blur_sigma_px=float(rng.choice([0.0, rng.uniform(0.3, 1.3)])),
        motion_blur_px=int(rng.choice([0, 0, int(rng.integers(2, 7))])),
        motion_blur_angle_deg=rng.uniform(0, 180),
        noise_sigma=rng.uniform(0.0, 7.0),
        crf=int(rng.integers(18, 34)),
        grass_texture=rng.uniform(0.0, 0.15),
    )
