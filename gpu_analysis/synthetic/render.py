"""Drawing a match: the static stadium for one camera, players as people, image degradations."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpu_analysis.synthetic.camera import PITCH_LENGTH_M, PITCH_WIDTH_M, Camera
from gpu_analysis.synthetic.look import HAIR_COLOURS, SKIN_TONES, Kit, Look

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel placement of small players
_ONE = 1 << _SHIFT

# The ground texture covers the pitch and its surroundings, in metres.
_GROUND_X0_M, _GROUND_Y0_M = -30.0, -30.0
_GROUND_LEN_M, _GROUND_WID_M = PITCH_LENGTH_M + 60.0, PITCH_WIDTH_M + 60.0
_GROUND_PX_PER_M = 16.0
_GRASS_MARGIN_M = 6.0  # grass beyond the lines, then the stadium surround
_BOARD_GAP_M = 4.0
_STAND_GAP_M = 7.0


def _plane_warp(
    frame: np.ndarray,
    camera: Camera,
    texture: np.ndarray,
    origin_m,
    axis_u_m,
    axis_v_m,
) -> None:
    """Paint `texture` onto the 3-D rectangle origin + s*axis_u + t*axis_v (s, t in 0..1).

    Uses the exact plane-to-image homography and skips pixels whose ray meets the plane
    behind the camera, so planes that extend past the camera are drawn correctly.
    """
    k, r, t = camera.intrinsics, camera.rotation, camera.translation
    o = np.asarray(origin_m, float)
    h = k @ np.column_stack([r @ np.asarray(axis_u_m, float), r @ np.asarray(axis_v_m, float)])
    h = np.column_stack([h, k @ (r @ o + t)])
    try:
        h_inv = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return  # the plane is seen edge-on
    height, width = frame.shape[:2]
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    # Plane coordinates of each pixel centre, (s, t, w) up to scale.
    s = h_inv[0, 0] * xs[None, :] + h_inv[0, 1] * ys[:, None] + h_inv[0, 2]
    tt = h_inv[1, 0] * xs[None, :] + h_inv[1, 1] * ys[:, None] + h_inv[1, 2]
    w = h_inv[2, 0] * xs[None, :] + h_inv[2, 1] * ys[:, None] + h_inv[2, 2]
    in_front = w > 1e-12
    w_safe = np.where(in_front, w, 1.0)
    s = s / w_safe
    tt = tt / w_safe
    valid = in_front & (s >= 0) & (s <= 1) & (tt >= 0) & (tt <= 1)
    if not valid.any():
        return
    th, tw = texture.shape[:2]
    map_x = (s * tw - 0.5).astype(np.float32)
    map_y = (tt * th - 0.5).astype(np.float32)
    warped = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    frame[valid] = warped[valid]


def _ground_texture(
    look: Look, rng: np.random.Generator, ppm: float = _GROUND_PX_PER_M
) -> np.ndarray:
    tw, th = int(_GROUND_LEN_M * ppm), int(_GROUND_WID_M * ppm)
    x_m = (np.arange(tw) + 0.5) / ppm + _GROUND_X0_M
    y_m = (np.arange(th) + 0.5) / ppm + _GROUND_Y0_M
    stripe = np.floor(x_m / look.stripe_width_m).astype(int) % 2
    column_rgb = np.where(stripe[:, None] == 0, look.grass[0], look.grass[1]).astype(np.float32)
    # Low-frequency mottling so the grass is not flat colour; fine grain drawn at a quarter
    # of the size (full-size noise would cost more than everything else here).
    small = rng.normal(0, 1, (th // 64 + 2, tw // 64 + 2)).astype(np.float32)
    mottle = cv2.resize(small, (tw, th), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 1, (th // 4, tw // 4)).astype(np.float32)
    fine = cv2.resize(fine, (tw, th), interpolation=cv2.INTER_LINEAR)
    gain = 1 + look.grass_texture * (mottle + 0.3 * fine)
    grass = gain[..., None] * column_rgb[None, :, :]
    # Beyond the grass margin: a darker surround (track, concrete).
    surround = np.array([95, 90, 85], np.float32) * (0.7 + 0.6 * rng.random())
    grass[(y_m < -_GRASS_MARGIN_M) | (y_m > PITCH_WIDTH_M + _GRASS_MARGIN_M)] = surround
    grass[:, (x_m < -_GRASS_MARGIN_M) | (x_m > PITCH_LENGTH_M + _GRASS_MARGIN_M)] = surround
    tex = np.clip(grass, 0, 255).astype(np.uint8)
    _draw_pitch_lines(tex, look, ppm)
    return tex


def _draw_pitch_lines(tex: np.ndarray, look: Look, ppm: float) -> None:
    def px(x_m: float, y_m: float) -> tuple[int, int]:
        return (
            round((x_m - _GROUND_X0_M) * ppm * _ONE),
            round((y_m - _GROUND_Y0_M) * ppm * _ONE),
        )

    thick = max(1, round(look.line_width_m * ppm))
    colour = tuple(int(c) for c in look.line_rgb)
    length, width = PITCH_LENGTH_M, PITCH_WIDTH_M

    def line(a, b):
        cv2.line(tex, px(*a), px(*b), colour, thick, cv2.LINE_AA, _SHIFT)

    def rect(x0, y0, x1, y1):
        line((x0, y0), (x1, y0))
        line((x1, y0), (x1, y1))
        line((x1, y1), (x0, y1))
        line((x0, y1), (x0, y0))

    def arc(cx, cy, r, a0, a1):
        angles = np.radians(np.linspace(a0, a1, 96))
        pts = np.array([px(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles], np.int32)
        cv2.polylines(tex, [pts], False, colour, thick, cv2.LINE_AA, _SHIFT)

    rect(0, 0, length, width)
    line((length / 2, 0), (length / 2, width))
    arc(length / 2, width / 2, 9.15, 0, 360)
    cy = width / 2
    for x0, sign in ((0.0, 1.0), (length, -1.0)):
        rect(min(x0, x0 + sign * 16.5), cy - 20.16, max(x0, x0 + sign * 16.5), cy + 20.16)
        rect(min(x0, x0 + sign * 5.5), cy - 9.16, max(x0, x0 + sign * 5.5), cy + 9.16)
        spot = x0 + sign * 11.0
        cv2.circle(tex, px(spot, cy), round(0.2 * ppm * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)
        # The penalty arc: the part of the 9.15 m circle outside the area.
        half = np.degrees(np.arccos(5.5 / 9.15))
        centre_angle = 0.0 if sign > 0 else 180.0
        arc(spot, cy, 9.15, centre_angle - half, centre_angle + half)
    cv2.circle(tex, px(length / 2, cy), round(0.2 * ppm * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)
    for cx, cyy, a0 in ((0, 0, 0), (length, 0, 90), (length, width, 180), (0, width, 270)):
        arc(cx, cyy, 1.0, a0, a0 + 90)


def _crowd_texture(look: Look, rng: np.random.Generator, length_m: float, depth_m: float):
    seats_x, rows = int(length_m * 2), int(depth_m * 1.6)
    palette = np.array(look.crowd_palette, np.float32)
    crowd = palette[rng.integers(0, len(palette), (rows, seats_x))]
    empty = rng.random((rows, seats_x)) < rng.uniform(0.0, 0.4)
    seat = np.array([70, 70, 78], np.float32) * rng.uniform(0.6, 1.4)
    crowd[empty] = seat
    crowd *= rng.uniform(0.5, 1.0, (rows, seats_x, 1)).astype(np.float32)
    tex = cv2.resize(crowd, (seats_x * 4, rows * 4), interpolation=cv2.INTER_NEAREST)
    tex[::8] *= 0.6  # tier steps
    tex = cv2.GaussianBlur(tex, (0, 0), 0.8)
    return np.clip(tex, 0, 255).astype(np.uint8)


def _board_texture(look: Look, rng: np.random.Generator, length_m: float) -> np.ndarray:
    ppm = 24
    tw, th = int(length_m * ppm), ppm
    tex = np.zeros((th, tw, 3), np.uint8)
    palette = look.board_palette
    x = 0
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while x < tw:
        seg = int(rng.uniform(5, 12) * ppm)
        bg = palette[int(rng.integers(len(palette)))]
        fg = palette[int(rng.integers(len(palette)))]
        if fg == bg:
            fg = tuple(255 - c for c in bg)
        cv2.rectangle(tex, (x, 0), (x + seg, th), bg, -1)
        word = "".join(rng.choice(list(letters), int(rng.integers(3, 9))))
        cv2.putText(
            tex,
            word,
            (x + ppm // 2, int(th * 0.8)),
            cv2.FONT_HERSHEY_DUPLEX,
            th / 30.0,
            fg,
            2,
            cv2.LINE_AA,
        )
        x += seg
    return tex


def _draw_goals(frame: np.ndarray, camera: Camera, look: Look) -> None:
    colour = tuple(int(c) for c in look.line_rgb)
    net = (200, 200, 200)
    for x0, sign in ((0.0, -1.0), (PITCH_LENGTH_M, 1.0)):
        y0, y1, top, back = PITCH_WIDTH_M / 2 - 3.66, PITCH_WIDTH_M / 2 + 3.66, 2.44, 2.0
        posts = [
            ((x0, y0, 0), (x0, y0, top)),
            ((x0, y1, 0), (x0, y1, top)),
            ((x0, y0, top), (x0, y1, top)),
        ]
        frame_lines = [
            ((x0, y0, top), (x0 + sign * back, y0, top * 0.6)),
            ((x0, y1, top), (x0 + sign * back, y1, top * 0.6)),
            ((x0 + sign * back, y0, top * 0.6), (x0 + sign * back, y1, top * 0.6)),
            ((x0 + sign * back, y0, top * 0.6), (x0 + sign * back, y0, 0)),
            ((x0 + sign * back, y1, top * 0.6), (x0 + sign * back, y1, 0)),
        ]
        for segs, col in ((frame_lines, net), (posts, colour)):
            for a, b in segs:
                pts = np.array([a, b], float)
                if (camera.depth_m(pts) < 1.0).any():
                    continue
                ab = camera.project(pts)
                scale = camera.focal_px / camera.depth_m(pts).mean()
                thick = max(1, round(0.12 * scale))
                p0 = tuple(np.round(ab[0] * _ONE).astype(int))
                p1 = tuple(np.round(ab[1] * _ONE).astype(int))
                cv2.line(frame, p0, p1, col, thick, cv2.LINE_AA, _SHIFT)


def _clip_polygon_to_view(camera: Camera, corners_m: np.ndarray) -> np.ndarray:
    """The part of a 3-D polygon inside the camera's view, projected to pixels (K, 2).

    Sutherland-Hodgman against the near plane and the four sides of the frame (with a
    margin), in camera coordinates: what lies behind the camera never reaches the image, and
    the projected corners stay small numbers that cv2's fixed-point polygons can hold.
    """
    cam = corners_m @ camera.rotation.T + camera.translation
    k = camera.intrinsics
    f, cx, cy = k[0, 0], k[0, 2], k[1, 2]
    margin = 4.0
    x0, x1 = (-margin - cx) / f, (camera.width + margin - cx) / f
    y0, y1 = (-margin - cy) / f, (camera.height + margin - cy) / f
    # Each plane as a, with a . (x, y, z) >= 0 inside.
    planes = (
        np.array([0.0, 0.0, 1.0, -0.05]),  # z >= 5 cm
        np.array([1.0, 0.0, -x0, 0.0]),  # x >= x0 z
        np.array([-1.0, 0.0, x1, 0.0]),  # x <= x1 z
        np.array([0.0, 1.0, -y0, 0.0]),
        np.array([0.0, -1.0, y1, 0.0]),
    )
    poly = list(cam)
    for plane in planes:
        if not poly:
            break
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            d_cur = plane[:3] @ cur + plane[3]
            d_prev = plane[:3] @ prev + plane[3]
            if d_cur >= 0:
                if d_prev < 0:
                    out.append(prev + (cur - prev) * (d_prev / (d_prev - d_cur)))
                out.append(cur)
            elif d_prev >= 0:
                out.append(prev + (cur - prev) * (d_prev / (d_prev - d_cur)))
        poly = out
    if len(poly) < 3:
        return np.zeros((0, 2))
    pts = np.array(poly) @ k.T
    return pts[:, :2] / pts[:, 2:3]


class _MipLevels:
    """A texture pre-shrunk by 1, 2, 4 or 8 along each axis on its own (anisotropic mipmaps).

    Sampling a far part of the pitch straight from the full texture skips texels: a far
    touchline, foreshortened to a pixel, breaks into dashes. Each band of image rows is
    drawn from the level that shrinks the texture about as much as the view does there.
    """

    _FACTORS = (1, 2, 4, 8)

    def __init__(self, texture: np.ndarray):
        self.full = texture
        self._levels: dict[tuple[int, int], np.ndarray] = {(1, 1): texture}

    def level(self, fx: int, fy: int) -> np.ndarray:
        if (fx, fy) not in self._levels:
            th, tw = self.full.shape[:2]
            size = (max(1, tw // fx), max(1, th // fy))
            self._levels[(fx, fy)] = cv2.resize(self.full, size, interpolation=cv2.INTER_AREA)
        return self._levels[(fx, fy)]

    @classmethod
    def factor(cls, texels_per_px: float) -> int:
        """The largest level factor not above the texels one image pixel spans."""
        return max(f for f in cls._FACTORS if f <= max(1.0, texels_per_px))


def _plane_warp_fast(
    frame: np.ndarray,
    camera: Camera,
    texture: np.ndarray | _MipLevels,
    origin_m,
    axis_u_m,
    axis_v_m,
) -> None:
    """`_plane_warp` for a camera that moves: the same picture at a fraction of the cost.

    One cv2.warpPerspective over the bounding box of the plane's visible polygon, instead
    of float64 maps over the whole frame for every plane. A plane wholly in front of the
    camera is masked by its texture's edge; one reaching behind it by the visible polygon
    (clipped at the near plane), so nothing behind the camera is drawn. With _MipLevels,
    bands of rows are drawn from the level that suits their distance.
    """
    o = np.asarray(origin_m, float)
    u = np.asarray(axis_u_m, float)
    v = np.asarray(axis_v_m, float)
    corners_m = np.array([o, o + u, o + u + v, o + v])
    polygon_px = _clip_polygon_to_view(camera, corners_m)
    if len(polygon_px) < 3:
        return
    height, width = frame.shape[:2]
    x0 = max(0, int(np.floor(polygon_px[:, 0].min())))
    y0 = max(0, int(np.floor(polygon_px[:, 1].min())))
    x1 = min(width, int(np.ceil(polygon_px[:, 0].max())) + 1)
    y1 = min(height, int(np.ceil(polygon_px[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    k, r, t = camera.intrinsics, camera.rotation, camera.translation
    h = k @ np.column_stack([r @ u, r @ v, r @ o + t])  # plane (s, t, 1) -> image
    try:
        h_inv = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return  # the plane is seen edge-on
    mask = None
    if not (camera.depth_m(corners_m) > 0.05).all():
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        # Pixel centres sit at whole coordinates in cv2's polygon fill.
        local = np.round((polygon_px - [x0, y0]) * _ONE).astype(np.int32)
        cv2.fillPoly(mask, [local], 1, cv2.LINE_8, _SHIFT)
    if isinstance(texture, _MipLevels):
        bands = _mip_bands(texture, h, h_inv, x0, x1, y0, y1)
    else:
        bands = [(y0, y1, texture)]
    for b0, b1, tex in bands:
        _warp_band(
            frame, tex, h_inv, x0, x1, b0, b1, None if mask is None else mask[b0 - y0 : b1 - y0]
        )


def _mip_bands(mip: _MipLevels, h, h_inv, x0, x1, y0, y1) -> list[tuple[int, int, np.ndarray]]:
    """Row bands [b0, b1) of the ROI, each with the mip level its distance calls for."""
    th, tw = mip.full.shape[:2]
    step = 8
    rows = np.arange(y0, y1, step, dtype=np.float64) + step / 2
    cx = (x0 + x1) / 2.0
    st = np.c_[np.full(len(rows), cx), rows, np.ones(len(rows))] @ h_inv.T
    st = st[:, :2] / st[:, 2:3]
    bands: list[tuple[int, int, np.ndarray]] = []
    for j, (s, t_) in enumerate(st):
        # Image pixels per texel along each texture axis, from the homography's derivative.
        ds, dt = 1.0 / tw, 1.0 / th
        base = h @ [s, t_, 1.0]
        along_s = h @ [s + ds, t_, 1.0]
        along_t = h @ [s, t_ + dt, 1.0]
        px_s = np.linalg.norm(along_s[:2] / along_s[2] - base[:2] / base[2])
        px_t = np.linalg.norm(along_t[:2] / along_t[2] - base[:2] / base[2])
        fx = _MipLevels.factor(1.0 / max(px_s, 1e-9)) if np.isfinite(px_s) else 1
        fy = _MipLevels.factor(1.0 / max(px_t, 1e-9)) if np.isfinite(px_t) else 1
        tex = mip.level(fx, fy)
        b0, b1 = y0 + j * step, min(y1, y0 + (j + 1) * step)
        if bands and bands[-1][2] is tex:
            bands[-1] = (bands[-1][0], b1, tex)
        else:
            bands.append((b0, b1, tex))
    return bands


def _warp_band(frame, texture, h_inv, x0, x1, y0, y1, mask) -> None:
    th, tw = texture.shape[:2]
    # Image pixel (x0 + i, y0 + j) -> plane (s, t) -> texture pixel (s tw - 0.5, t th - 0.5),
    # the sampling convention of _plane_warp.
    to_texture = np.array([[tw, 0.0, -0.5], [0.0, th, -0.5], [0.0, 0.0, 1.0]])
    from_roi = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    m = to_texture @ h_inv @ from_roi
    roi = frame[y0:y1, x0:x1]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if mask is None:
        # The whole plane is in front of the camera, so no pixel's ray meets it behind: the
        # texture's own edge is the mask (transparent border), written in place.
        cv2.warpPerspective(
            texture, m, (x1 - x0, y1 - y0), dst=roi, flags=flags,
            borderMode=cv2.BORDER_TRANSPARENT,
        )  # fmt: skip
        return
    warped = cv2.warpPerspective(
        texture, m, (x1 - x0, y1 - y0), flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
    cv2.copyTo(warped, mask, roi)


class Stadium:
    """The stadium's textures (ground, stands, boards), made once, drawn from any camera.

    A static clip draws it once (`render_background`); a moving camera draws it every
    frame, so the stands do not change between frames. `ground_px_per_m` sets the
    resolution of the pitch texture (zoomed-in cameras want more).
    """

    def __init__(
        self,
        look: Look,
        rng: np.random.Generator,
        camera_position_m: tuple[float, float, float],
        ground_px_per_m: float = _GROUND_PX_PER_M,
    ):
        # The random draws come in the order render_background always made them: ground,
        # stands the camera is not in, boards; the same seed gives the same stadium.
        self.look = look
        self.ground = _ground_texture(look, rng, ground_px_per_m)
        self._ground_mip = _MipLevels(self.ground)
        cx, cy, _ = camera_position_m
        ext, rise, depth = 14.0, 24.0, 40.0
        length, width = PITCH_LENGTH_M, PITCH_WIDTH_M
        # (origin, along-axis, up-the-stand axis, is the camera on that side?)
        stands = [
            (
                (-ext, width + _STAND_GAP_M, 1.5),
                (length + 2 * ext, 0, 0),
                (0, depth, rise),
                cy > width + _STAND_GAP_M,
            ),
            (
                (length + ext, -_STAND_GAP_M, 1.5),
                (-(length + 2 * ext), 0, 0),
                (0, -depth, rise),
                cy < -_STAND_GAP_M,
            ),
            (
                (-_STAND_GAP_M, -ext, 1.5),
                (0, width + 2 * ext, 0),
                (-depth, 0, rise),
                cx < -_STAND_GAP_M,
            ),
            (
                (length + _STAND_GAP_M, width + ext, 1.5),
                (0, -(width + 2 * ext), 0),
                (depth, 0, rise),
                cx > length + _STAND_GAP_M,
            ),
        ]
        self.stands = []
        for origin, along, up, camera_inside in stands:
            if camera_inside:
                continue
            tex = _crowd_texture(look, rng, float(np.linalg.norm(along)), float(np.linalg.norm(up)))
            # Texture rows run down the image; the stand's up axis runs up it, so flip.
            self.stands.append((tex[::-1].copy(), origin, along, up))
        boards = [
            ((-10.0, width + _BOARD_GAP_M, 0.0), (length + 20.0, 0, 0)),
            ((length + 10.0, -_BOARD_GAP_M, 0.0), (-(length + 20.0), 0, 0)),
            ((-_BOARD_GAP_M, -6.0, 0.0), (0, width + 12.0, 0)),
            ((length + _BOARD_GAP_M, width + 6.0, 0.0), (0, -(width + 12.0), 0)),
        ]
        self.boards = []
        for origin, along in boards:
            tex = _board_texture(look, rng, float(np.linalg.norm(along)))
            self.boards.append((tex[::-1].copy(), origin, along, (0, 0, 0.9)))
        self._sky: dict[tuple[int, int], np.ndarray] = {}

    def _sky_frame(self, width: int, height: int) -> np.ndarray:
        if (width, height) not in self._sky:
            sky = np.array(self.look.sky_rgb, np.float32)
            ramp = np.linspace(0.8, 1.1, height, dtype=np.float32)[:, None, None]
            frame = np.broadcast_to(sky, (height, width, 3)) * ramp
            self._sky[(width, height)] = np.clip(frame, 0, 255).astype(np.uint8)
        return self._sky[(width, height)]

    def draw(self, camera: Camera, *, exact: bool = False) -> np.ndarray:
        """The stadium as `camera` sees it (RGB uint8): sky, ground, stands, boards, goals.

        `exact` uses the per-pixel warp of the static renderer (bit for bit what clips of a
        static camera always had); otherwise the fast warp.
        """
        warp = _plane_warp if exact else _plane_warp_fast
        frame = self._sky_frame(camera.width, camera.height).copy()
        warp(
            frame,
            camera,
            self.ground if exact else self._ground_mip,
            (_GROUND_X0_M, _GROUND_Y0_M, 0.0),
            (_GROUND_LEN_M, 0.0, 0.0),
            (0.0, _GROUND_WID_M, 0.0),
        )
        for tex, origin, along, up in self.stands + self.boards:
            warp(frame, camera, tex, origin, along, up)
        _draw_goals(frame, camera, self.look)
        return frame


def render_background(camera: Camera, look: Look, rng: np.random.Generator) -> np.ndarray:
    """The static stadium as the camera sees it (RGB uint8): sky, ground, stands, boards."""
    return Stadium(look, rng, camera.position_m).draw(camera, exact=True)


@dataclass(frozen=True)
class PlayerStyle:
    """What one player looks like for the whole clip."""

    kit: Kit
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    height_m: float
    build: float  # width multiplier


def player_styles(
    rng: np.random.Generator, look: Look, team: np.ndarray, is_goalkeeper: np.ndarray
) -> list[PlayerStyle]:
    styles = []
    for t, gk in zip(team, is_goalkeeper, strict=True):
        if t < 0:
            kit = look.official_kit
        else:
            kit = look.goalkeeper_kits[int(t)] if gk else look.kits[int(t)]
        styles.append(
            PlayerStyle(
                kit=kit,
                skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
                hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
                height_m=float(rng.uniform(*look.player_height_m)),
                build=float(rng.uniform(0.85, 1.15)),
            )
        )
    return styles


def _fp(p: np.ndarray) -> tuple[int, int]:
    return (round(float(p[0]) * _ONE), round(float(p[1]) * _ONE))


def draw_person(
    frame: np.ndarray,
    labels: np.ndarray | None,
    label: int,
    foot_px: np.ndarray,
    top_px: np.ndarray,
    style: PlayerStyle,
    phase_rad: float,
    stride: float,
    facing: float,
    look: Look,
) -> None:
    """Draw one upright person standing on foot_px with the top of the head at top_px.

    `stride` 0..1 is how much the legs and arms swing (running), `facing` 0..1 narrows the
    body when seen side-on. When `labels` is given, the silhouette is written there as
    `label` (no shadow), which is how occlusion is measured.
    """
    up = top_px - foot_px
    height_px = float(np.hypot(*up))
    if height_px < 2:
        return
    up = up / height_px
    right = np.array([-up[1], up[0]])
    width = style.build * (0.6 + 0.4 * facing)

    def at(a: float, b: float) -> np.ndarray:
        return foot_px + (a * width * right + b * up) * height_px

    def thick(frac: float) -> int:
        return max(1, round(frac * height_px * style.build))

    swing = 0.13 * stride * np.sin(phase_rad)
    arm_swing = 0.10 * stride * np.sin(phase_rad)
    kit = style.kit
    sleeve = kit.sleeve or kit.shirt

    # Shadow first: on the ground, offset away from the sun.
    if labels is None and look.shadow_strength > 0:
        sun = np.asarray(look.sun_direction)
        centre = foot_px + sun * 0.18 * height_px
        axes = (max(1, round(0.22 * height_px * _ONE)), max(1, round(0.05 * height_px * _ONE)))
        angle = float(np.degrees(np.arctan2(sun[1], sun[0])))
        x0 = max(0, int(centre[0] - 0.35 * height_px) - 2)
        y0 = max(0, int(centre[1] - 0.2 * height_px) - 2)
        x1 = min(frame.shape[1], int(centre[0] + 0.35 * height_px) + 3)
        y1 = min(frame.shape[0], int(centre[1] + 0.2 * height_px) + 3)
        if x1 > x0 and y1 > y0:
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            local = (round((centre[0] - x0) * _ONE), round((centre[1] - y0) * _ONE))
            cv2.ellipse(mask, local, axes, angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            roi *= 1 - look.shadow_strength * (mask[..., None] / 255.0)
            frame[y0:y1, x0:x1] = roi.astype(np.uint8)

    def paint(colour):
        return (int(label),) * 3 if labels is not None else tuple(int(c) for c in colour)

    target = labels if labels is not None else frame
    aa = cv2.LINE_8 if labels is not None else cv2.LINE_AA

    def seg(a, b, colour, frac):
        cv2.line(target, _fp(a), _fp(b), paint(colour), thick(frac), aa, _SHIFT)

    def poly(points, colour):
        pts = np.array([_fp(p) for p in points], np.int32)
        cv2.fillConvexPoly(target, pts, paint(colour), aa, _SHIFT)

    # Legs: sock below, skin above, from the hips to the feet.
    for side, off in ((-1, swing), (1, -swing)):
        hip = at(side * 0.055, 0.47)
        knee = at(side * 0.05 + off * 0.5, 0.25)
        foot = at(side * 0.045 + off, 0.02)
        seg(hip, knee, style.skin, 0.06)
        seg(knee, foot, kit.socks, 0.055)
        seg(foot, at(side * 0.045 + off + 0.03, 0.005), (25, 25, 25), 0.05)
    # Shorts and torso.
    poly([at(-0.11, 0.55), at(0.11, 0.55), at(0.115, 0.41), at(-0.115, 0.41)], kit.shorts)
    poly([at(-0.125, 0.80), at(0.125, 0.80), at(0.11, 0.53), at(-0.11, 0.53)], kit.shirt)
    # Stripes only where they are wider than a pixel; below that they would wash the kit out.
    if kit.stripe is not None and labels is None and height_px >= 40:
        for a in (-0.06, 0.0, 0.06):
            seg(at(a, 0.79), at(a, 0.55), kit.stripe, 0.025)
    # Arms: sleeve then forearm.
    for side, off in ((-1, -arm_swing), (1, arm_swing)):
        shoulder = at(side * 0.13, 0.78)
        elbow = at(side * 0.16 + off, 0.64)
        hand = at(side * 0.15 + off * 1.6, 0.51)
        seg(shoulder, elbow, sleeve, 0.05)
        seg(elbow, hand, style.skin, 0.04)
    # Neck and head, hair on top.
    seg(at(0, 0.80), at(0, 0.85), style.skin, 0.05)
    head = at(0, 0.905)
    r = max(1, round(0.06 * height_px * _ONE))
    cv2.circle(target, _fp(head), r, paint(style.skin), -1, aa, _SHIFT)
    if labels is None:
        hair_r = max(1, round(0.062 * height_px * _ONE))
        ang = float(np.degrees(np.arctan2(-up[1], -up[0])))
        cv2.ellipse(
            target,
            _fp(head),
            (hair_r, hair_r),
            ang,
            110,
            250,
            paint(style.hair),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )


class Degrader:
    """Lighting, optics, camera shake and sensor noise (compression happens in the encoder).

    Sensor noise comes from one pre-drawn field cropped at a random offset per frame: drawing
    fresh Gaussian noise for every 1080p frame would cost more than rendering it.
    """

    _PAD = 64

    def __init__(self, look: Look, width: int, height: int, rng: np.random.Generator):
        self.look = look
        self.rng = rng
        self.noise = None
        if look.noise_sigma > 0:
            shape = (height + self._PAD, width + self._PAD, 3)
            self.noise = rng.normal(0, look.noise_sigma, shape).astype(np.float32)
        self.kernel = None
        if look.motion_blur_px > 1:
            n = look.motion_blur_px
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2, :] = 1.0 / n
            centre = ((n - 1) / 2, (n - 1) / 2)
            rot = cv2.getRotationMatrix2D(centre, look.motion_blur_angle_deg, 1)
            kernel = cv2.warpAffine(kernel, rot, (n, n))
            self.kernel = kernel / max(kernel.sum(), 1e-6)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        look = self.look
        out = frame.astype(np.float32)
        if look.brightness != 1.0:
            out *= look.brightness
        if look.blur_sigma_px > 0:
            out = cv2.GaussianBlur(out, (0, 0), look.blur_sigma_px)
        if self.kernel is not None:
            out = cv2.filter2D(out, -1, self.kernel)
        if self.noise is not None:
            h, w = out.shape[:2]
            dy, dx = self.rng.integers(0, self._PAD, 2)
            out += self.noise[dy : dy + h, dx : dx + w]
        return np.clip(out, 0, 255).astype(np.uint8)
