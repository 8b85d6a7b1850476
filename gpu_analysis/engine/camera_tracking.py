"""Camera tracking: every sampled frame's image->pitch homography from one calibrated frame.

Each frame is registered to the last frame whose homography was set (sub-pixel flow of
corners on the grass, ORB matches when the camera jerked), then the prediction is pulled
onto the painted pitch lines (the projected Law 1 markings fitted to the frame's line
pixels), so errors do not accumulate. Shot cuts and close-ups (registration fails, the
colours jump, the markings do not fit) leave frames uncovered: their players are not
projected at all. After a cut the pitch is re-acquired by registering the frame to
keyframes (the reference frame and recent good frames), else from the markings alone (pans,
tilts and zooms of the reference camera on its mount). docs/cameras.md has the figures.

Everything runs on the letterboxed model input (a 1080p frame is 768 px wide there): the
markings are still a pixel wide and the cost stays small next to decoding and the model.
All homographies are kept in source-video pixels (undistorted, when the calibration gives a
lens distortion), so they compose with the calibration file's homography directly.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from gpu_analysis.engine.batching import FrameBatch, Letterbox
from gpu_analysis.engine.calibration import Calibration
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.pitch_model import (
    Distortion,
    draw_pitch_lines,
    ground_side,
    pitch_line_samples_m,
    png_bytes,
    project_points,
)

# Corners moving less than this (model-input pixels) against the anchor frame: the camera
# did not move, and the anchor's homography is kept exactly (a static camera's maps stay
# bit-identical to an untracked run). Registration noise on an encoded static clip is
# ~0.1 px; a 0.2 degree pan at 5 fps already moves 2 px.
STILL_PX = 0.6
# Registration needs this many RANSAC inliers (model-input pixels, 2.5 px threshold).
MIN_INLIERS = 25
# The markings may correct a registration by this much (model-input px) at most; more is
# a fit gone wrong (a pan's error between two samples is a few pixels).
MAX_REFINE_SHIFT_PX = 12.0
# Share of the anchor's corners whose flow must agree with a guessed motion for ORB to be
# skipped (a still or steadily panning camera: the common case, and the cheap one).
FLOW_AGREEMENT = 0.5
# Hue-saturation histograms of neighbouring frames correlating less than this: a cut.
CUT_HIST_CORRELATION = 0.6
# A frame's homography is trusted when this share of the markings it predicts in view lie
# within LINE_HIT_PX of a line pixel, counted over at least MIN_MODEL_POINTS marking points.
LINE_HIT_PX = 2.5
MIN_LINE_SUPPORT = 0.45
MIN_MODEL_POINTS = 60
# With fewer markings in view (a zoom on midfield), a chain of registrations from a
# line-confirmed frame is trusted for at most this many frames.
MAX_UNCONFIRMED_FRAMES = 25
# Recent line-confirmed frames kept to re-acquire the pitch after a cut.
KEYFRAMES = 8
KEYFRAME_EVERY = 10
# Re-acquiring from the markings alone: the pans, tilts (degrees) and zooms (times the
# reference focal length) searched, in 1 degree and 6 % steps, and how the best candidates
# are refined. Only frames with this many line pixels are searched (close-ups have few).
SEARCH_PAN_DEG = 45.0
SEARCH_TILT_DEG = 10.0
SEARCH_STEP_DEG = 1.0
SEARCH_ZOOM = (0.5, 3.0)
SEARCH_HIT_PX = 6.0
SEARCH_CANDIDATES = 4
SEARCH_RADII_PX = (24.0, 16.0, 10.0, 7.0, 5.0, 4.0, 3.0, 3.0)
MIN_SEARCH_LINE_PIXELS = 200
# A view found from the markings alone must fit many of them well: a close-up shows a line
# or two, which many wrong views fit as well.
SEARCH_MIN_SUPPORT = 0.7
SEARCH_MIN_MODEL_POINTS = 150


class _View:
    """What tracking needs of one frame, each part computed the first time it is needed: a
    still camera costs a grey image, a histogram and the flow of the anchor's corners; the
    markings (line pixels, distance transform) and ORB features only when they are used."""

    def __init__(self, tracker: CameraTracker, image_rgb: np.ndarray):
        self.tracker, self.image_rgb = tracker, image_rgb
        g = tracker.g
        self.gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        self.inside = np.zeros(self.gray.shape, np.uint8)
        self.inside[g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w] = 255
        small = cv2.resize(image_rgb, (64, 36), interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_RGB2HSV)], [0, 1], None, [16, 8],
                            [0, 180, 0, 256])  # fmt: skip
        self.hist = cv2.normalize(hist, hist)

    @functools.cached_property
    def corners_input(self) -> np.ndarray:
        """float32 (N, 1, 2): corners spread over the grass, for sub-pixel flow (ORB's sit
        on whole pixels and crowd into the stands)."""
        # Only on the ground: stands move with the pitch under a turning camera, but not
        # under a moving one, and a letterbox border or a broadcaster's overlay not at all.
        # Found at half size (a quarter of the cost; the flow then works at full size).
        mask = cv2.resize(self.usable.astype(np.uint8) * 255, None, fx=0.5, fy=0.5,
                          interpolation=cv2.INTER_NEAREST)  # fmt: skip
        half = cv2.resize(self.gray, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
        corners = cv2.goodFeaturesToTrack(half, 300, 0.0005, 7, mask=mask, blockSize=5)
        if corners is None:
            return np.zeros((0, 1, 2), np.float32)
        return (corners * 2.0 + 0.5).astype(np.float32)

    @functools.cached_property
    def _orb(self) -> tuple[np.ndarray, np.ndarray | None]:
        kp, desc = self.tracker.orb.detectAndCompute(self.gray, self.inside)
        pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2) + 0.5
        return self.tracker._to_src(pts), desc

    @property
    def keypoints_src(self) -> np.ndarray:
        return self._orb[0]

    @property
    def descriptors(self) -> np.ndarray | None:
        return self._orb[1]

    @functools.cached_property
    def usable(self) -> np.ndarray:
        """bool (H, W): grass (green dominates, lines included), not letterbox padding."""
        h, w = self.gray.shape
        # At a quarter size: the grass is large, and a blur there costs a sixteenth.
        small = cv2.resize(self.image_rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        small = cv2.blur(small, (3, 3)).astype(np.int16)
        grass = (small[..., 1] > small[..., 0] + 8) & (small[..., 1] > small[..., 2] + 8)
        grass = cv2.resize(grass.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        return (grass > 0) & (self.inside > 0)

    @functools.cached_property
    def _markings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # White paint raises red and blue far above the grass (whose stripes and shadows
        # vary mostly in green), so the top-hat of min(R, B) finds even lines thinner than
        # a pixel; red or blue shirts stay dark in that channel.
        rgb = self.image_rgb
        low = np.minimum(rgb[..., 0], rgb[..., 2])
        tophat = cv2.morphologyEx(low, cv2.MORPH_TOPHAT, np.ones((7, 7), np.uint8))
        lines = (tophat > 14) & self.usable
        if not lines.any():
            return (np.full(lines.shape, np.inf, np.float32), np.zeros(lines.shape, np.int32),
                    np.zeros((1, 2), np.int32))  # fmt: skip
        dist, labels = cv2.distanceTransformWithLabels(
            (~lines).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        coords = np.argwhere(lines)[:, ::-1].astype(np.int32)  # row-major = label order
        return dist, labels, coords

    @property
    def dist_px(self) -> np.ndarray:
        """float32 (H, W): distance to the nearest line pixel (input px)."""
        return self._markings[0]

    def nearest_line_px(self, xy: np.ndarray) -> np.ndarray:
        """The nearest line pixel (input px, int) of each integer pixel xy (N, 2)."""
        _, labels, coords = self._markings
        return coords[np.clip(labels[xy[:, 1], xy[:, 0]] - 1, 0, len(coords) - 1)]


@dataclasses.dataclass
class FrameCamera:
    """The tracker's answer for one frame."""

    image_to_pitch: np.ndarray  # float64 (3, 3) source px -> metres; NaN when not covered
    covered: bool
    cut: bool  # a shot change was detected between the previous frame and this one
    line_support: float


class CameraTracker:
    """Feeds on sampled frames in order; answers each frame's homography at once."""

    def __init__(
        self,
        calibration: Calibration,
        geometry: Letterbox,
        distortion: Distortion | None = None,
    ):
        self.calibration = calibration
        self.g = geometry
        self.distortion = distortion
        # A marking point every 0.5 m (0.75 m lost the track after a cut in the 30 degree
        # test clip: too few points on the far lines of a wide view).
        self.model_m = pitch_line_samples_m(calibration.length_m, calibration.width_m, 0.5)
        self.model_coarse_m = pitch_line_samples_m(calibration.length_m, calibration.width_m, 2.0)
        self.mount = Mount.from_homography(
            calibration.image_to_pitch, geometry.source_w, geometry.source_h
        )
        self.orb = cv2.ORB_create(nfeatures=700, fastThreshold=10)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        # The last frame-to-frame motion (source px): a pan or zoom goes on between samples.
        self.velocity: np.ndarray | None = None
        self.previous_h: np.ndarray | None = None
        self.anchor: tuple[_View, np.ndarray] | None = None  # last frame whose H was set
        self.previous_hist: np.ndarray | None = None
        self.keyframes: list[tuple[_View, np.ndarray]] = []
        self.unconfirmed = 0
        self.frames = 0
        self.covered = 0
        self.cuts = 0
        self.reacquired = 0
        self.moved = False
        self.was_covered = True
        self._since_keyframe = 0

    # -- coordinates ------------------------------------------------------------------------
    def _to_src(self, input_px: np.ndarray) -> np.ndarray:
        src = self.g.to_source_px(input_px)
        if self.distortion is not None and not self.distortion.is_identity:
            src = self.distortion.undistort(src)
        return src

    def _to_input(self, src_px: np.ndarray) -> np.ndarray:
        if self.distortion is not None and not self.distortion.is_identity:
            src_px = self.distortion.distort(src_px)
        return self.g.to_input_px(src_px)

    # -- per-frame analysis ---------------------------------------------------------------
    def _view(self, image_rgb: np.ndarray) -> _View:
        return _View(self, image_rgb)

    # -- geometry ---------------------------------------------------------------------------
    def _register(
        self, a: _View, b: _View, guesses: tuple[np.ndarray, ...] = ()
    ) -> tuple[np.ndarray | None, int]:
        """The homography from frame a's source pixels to frame b's, and its support.

        Candidates: ORB matches (any motion, but whole-pixel and easily fooled by a zoomed
        view of bare grass), the given guesses (the camera's last motion: a pan goes on) and
        no motion. Each is refined by sub-pixel flow; the one most corners agree with wins.
        """
        best, best_count = None, 0
        enough = max(MIN_INLIERS, FLOW_AGREEMENT * len(a.corners_input))
        for guess in (*guesses, np.eye(3)):
            h, count = self._flow_refine(a, b, guess)
            if count > best_count:
                best, best_count = h, count
            if best_count >= enough:
                break  # the camera went on as it moved: no other guess can do better
        # Most corners agreeing: the camera went on as it moved, or stood still. Otherwise
        # (a jerk, a large move between samples) ORB's matches, which cost more, may find it.
        if best_count < enough:
            orb = self._orb_homography(a, b)
            if orb is not None:
                h, count = self._flow_refine(a, b, orb)
                if count > best_count:
                    best, best_count = h, count
        if best is None or best_count < MIN_INLIERS:
            return None, best_count
        return best, best_count

    def _orb_homography(self, a: _View, b: _View) -> np.ndarray | None:
        if a.descriptors is None or b.descriptors is None or len(b.descriptors) < 2:
            return None
        pairs = self.matcher.knnMatch(a.descriptors, b.descriptors, k=2)
        # Lowe's ratio test: grass stripes and crowds repeat, so only distinct matches count.
        matches = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        if len(matches) < MIN_INLIERS:
            return None
        src = a.keypoints_src[[m.queryIdx for m in matches]]
        dst = b.keypoints_src[[m.trainIdx for m in matches]]
        threshold = 2.5 / self.g.scale
        h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=2000)
        if h is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
            return None
        return h

    def _flow_refine(self, a: _View, b: _View, h_src: np.ndarray) -> tuple[np.ndarray, int]:
        """Sub-pixel Lucas-Kanade flow of a's spread corners, started where h_src puts them:
        the homography the flow gives, and how many corners agree with it (1 px)."""
        if len(a.corners_input) < MIN_INLIERS:
            return h_src, 0
        start = a.corners_input.reshape(-1, 2).astype(np.float64)
        guess = self._to_input(project_points(h_src, self._to_src(start + 0.5))[0]) - 0.5
        if not np.isfinite(guess).all():
            return h_src, 0
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            a.gray, b.gray, start.astype(np.float32).reshape(-1, 1, 2),
            guess.astype(np.float32).reshape(-1, 1, 2), winSize=(21, 21), maxLevel=3,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        )  # fmt: skip
        ok = status.ravel() == 1
        if ok.sum() < MIN_INLIERS:
            return h_src, 0
        src = self._to_src(start[ok] + 0.5)
        dst = self._to_src(moved.reshape(-1, 2)[ok].astype(np.float64) + 0.5)
        h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 1.0 / self.g.scale)
        if h is None or inliers is None:
            return h_src, 0
        return h, int(inliers.sum())

    def _model_in_view(self, view: _View, image_to_pitch: np.ndarray):
        """The marking points the homography puts on usable pixels: (metres, input px)."""
        pitch_to_image = np.linalg.inv(image_to_pitch)
        side = ground_side(image_to_pitch, (self.g.source_w / 2, self.g.source_h - 1))
        src, front = project_points(pitch_to_image, self.model_m, side)
        inp = self._to_input(np.where(front[:, None], src, 0.0))
        h, w = view.usable.shape
        ok = front & (inp[:, 0] >= 0) & (inp[:, 0] < w) & (inp[:, 1] >= 0) & (inp[:, 1] < h)
        xy = np.floor(inp[ok]).astype(np.int64)
        keep = view.usable[xy[:, 1], xy[:, 0]]
        return self.model_m[ok][keep], inp[ok][keep]

    def markings_on_frame(self, image_to_pitch: np.ndarray | None = None) -> int:
        """How many marking points the homography puts inside the frame, grass or not."""
        h = self.calibration.image_to_pitch if image_to_pitch is None else image_to_pitch
        side = ground_side(h, (self.g.source_w / 2, self.g.source_h - 1))
        src, front = project_points(np.linalg.inv(h), self.model_m, side)
        inp = self._to_input(np.where(front[:, None], src, 0.0))
        g = self.g
        inside = (
            front
            & (inp[:, 0] >= g.pad_x) & (inp[:, 0] < g.pad_x + g.resized_w)
            & (inp[:, 1] >= g.pad_y) & (inp[:, 1] < g.pad_y + g.resized_h)
        )  # fmt: skip
        return int(inside.sum())

    def _line_support(self, view: _View, image_to_pitch: np.ndarray) -> tuple[float, int]:
        if not np.isfinite(image_to_pitch).all():
            return 0.0, 0
        _, inp = self._model_in_view(view, image_to_pitch)
        if len(inp) == 0:
            return 0.0, 0
        xy = np.floor(inp).astype(np.int64)
        hits = view.dist_px[xy[:, 1], xy[:, 0]] <= LINE_HIT_PX
        return float(hits.mean()), len(inp)

    def _refine(
        self,
        view: _View,
        image_to_pitch: np.ndarray,
        radii_px: tuple[float, ...] = (10.0, 6.0, 4.0, 3.0, 3.0),
    ) -> np.ndarray:
        """Pull the projected markings onto the frame's line pixels (damped Gauss-Newton).

        Each marking point's residual is its distance to the nearest line pixel, along the
        direction to it (the line's normal), so points slide freely along their line; far
        points (players, other lines) weigh nothing. The update is a homography applied on
        the image side; damping keeps directions the markings do not pin down (a view of a
        single straight line) at the registration's prediction.
        """
        g = self.g
        centre = np.array([g.input_w / 2.0, g.input_h / 2.0])
        norm = g.input_w / 2.0
        # Source pixels -> normalised input coordinates (letterbox, then centre and scale).
        t = np.array(
            [[g.scale / norm, 0, (g.pad_x - centre[0]) / norm],
             [0, g.scale / norm, (g.pad_y - centre[1]) / norm], [0, 0, 1]]
        )  # fmt: skip
        h = image_to_pitch
        for radius_px in radii_px:
            _, inp = self._model_in_view(view, h)
            if len(inp) < MIN_MODEL_POINTS:
                return h
            xy = np.floor(inp).astype(np.int64)
            nearest = view.nearest_line_px(xy) + 0.5
            offset = inp - nearest
            d = np.linalg.norm(offset, axis=1)
            near = (view.dist_px[xy[:, 1], xy[:, 0]] <= radius_px) & (d > 1e-6)
            if near.sum() < MIN_MODEL_POINTS // 2:
                return h
            n = offset[near] / d[near, None]
            u = (inp[near] - centre) / norm
            x, y = u[:, 0], u[:, 1]
            zero, one = np.zeros_like(x), np.ones_like(x)
            jx = np.stack([x, y, one, zero, zero, zero, -x * x, -x * y], axis=1)
            jy = np.stack([zero, zero, zero, x, y, one, -x * y, -y * y], axis=1)
            jac = (n[:, :1] * jx + n[:, 1:] * jy) * norm
            r = d[near]
            weight = 1.0 / (1.0 + (r / 2.0) ** 2)
            jtj = jac.T @ (jac * weight[:, None])
            damping = 1e-2 * np.trace(jtj) / 8 + 1e-9
            delta = np.linalg.solve(jtj + damping * np.eye(8), -jac.T @ (weight * r))
            if not np.isfinite(delta).all() or np.abs(delta).max() > 0.2:
                return h  # a jump this large is not a correction of a good prediction
            step = np.array(
                [[1 + delta[0], delta[1], delta[2]], [delta[3], 1 + delta[4], delta[5]],
                 [delta[6], delta[7], 1.0]]
            )  # fmt: skip
            pitch_to_src = np.linalg.inv(t) @ step @ t @ np.linalg.inv(h)
            refined = np.linalg.inv(pitch_to_src)
            if not np.isfinite(refined).all() or abs(refined[2, 2]) < 1e-12:
                return h
            h = refined / refined[2, 2]
        return h

    # -- the tracker ----------------------------------------------------------------------
    def set_reference(self, image_rgb: np.ndarray) -> None:
        """Start from the calibrated frame: the first anchor and the first keyframe."""
        view = self._view(image_rgb)
        self.anchor = (view, self.calibration.image_to_pitch)
        self.previous_h = self.calibration.image_to_pitch
        self.keyframes = [self.anchor]
        self.previous_hist = view.hist

    def update(self, image_rgb: np.ndarray) -> FrameCamera:
        """This frame's homography; NaN and not covered when none can be trusted."""
        if self.anchor is None and not self.keyframes:
            self.set_reference(image_rgb)
        self.frames += 1
        view = self._view(image_rgb)
        cut = False
        if self.previous_hist is not None:
            cut = cv2.compareHist(self.previous_hist, view.hist, cv2.HISTCMP_CORREL) < (
                CUT_HIST_CORRELATION
            )
        self.previous_hist = view.hist

        h_new = None
        if self.anchor is not None and not cut:
            anchor_view, anchor_h = self.anchor
            if len(anchor_view.corners_input) < MIN_INLIERS and (
                len(view.corners_input) < MIN_INLIERS
            ):
                # Nothing to register by (a dark or featureless picture) and no cut seen:
                # nothing says the camera moved, so it is taken as still.
                return self._hold(view, anchor_h)
            guesses = () if self.velocity is None else (self.velocity,)
            step, _ = self._register(anchor_view, view, guesses)
            if step is not None:
                corners = self.g.to_source_px(
                    np.array([[0, 0], [self.g.input_w, 0], [0, self.g.input_h],
                              [self.g.input_w, self.g.input_h]], np.float64)
                )  # fmt: skip
                moved_px = np.abs(project_points(step, corners)[0] - corners).max()
                if moved_px * self.g.scale < STILL_PX:
                    return self._hold(view, anchor_h)
                h_new = anchor_h @ np.linalg.inv(step)
        if h_new is None:
            if self.anchor is not None:
                cut = True
                self.anchor = None
            if cut and self.was_covered:
                self.cuts += 1
            h_new = self._reacquire(view)
            if h_new is None:
                return self._skip(cut)
        if not self._plausible(h_new):
            self.anchor = None
            return self._skip(cut)
        refined = self._refine(view, h_new)
        support, in_view = self._line_support(view, refined)
        if not self._plausible(refined) or self._shift_px(h_new, refined) > MAX_REFINE_SHIFT_PX:
            refined, (support, in_view) = h_new, self._line_support(view, h_new)
        elif support < MIN_LINE_SUPPORT:
            # The fit did not confirm the frame; maybe it made things worse.
            before, in_view_before = self._line_support(view, h_new)
            if support + 0.02 < before:
                refined, support, in_view = h_new, before, in_view_before
        confirmed = in_view >= MIN_MODEL_POINTS and support >= MIN_LINE_SUPPORT
        if not confirmed:
            # Few markings in view: trust the registration chain for a while; markings in
            # view that do not fit: a close-up or a lost track.
            if in_view >= MIN_MODEL_POINTS or self.unconfirmed >= MAX_UNCONFIRMED_FRAMES:
                self.anchor = None
                return self._skip(cut)
            if self.anchor is None:  # re-acquired without markings to confirm it: no
                return self._skip(cut)
        self.moved = True
        return dataclasses.replace(self._accept(view, refined, confirmed, support), cut=cut)

    def _ground_quad_m(self, image_to_pitch: np.ndarray) -> np.ndarray | None:
        """The lower half of the frame on the pitch (metres), or None if it is not all on
        the ground in front of the camera."""
        w, h = self.g.source_w, self.g.source_h
        quad = np.array([[0, h / 2], [w, h / 2], [w, h], [0, h]], np.float64)
        side = ground_side(image_to_pitch, (w / 2, h - 1))
        p = np.c_[quad, np.ones(4)] @ image_to_pitch.T
        if not np.isfinite(p).all() or (p[:, 2] * side <= 1e-12).any():
            return None
        return p[:, :2] / p[:, 2:]

    def _plausible(self, image_to_pitch: np.ndarray) -> bool:
        """A homography a camera looking at the pitch can have: the frame's lower half lands
        in front of it as a convex patch of sensible size (a collapsed or folded fit can
        put many markings on a few line pixels and still be nonsense)."""
        quad = self._ground_quad_m(image_to_pitch)
        if quad is None:
            return False

        def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]

        edges = np.roll(quad, -1, axis=0) - quad
        turns = cross(edges, np.roll(edges, -1, axis=0))
        area = 0.5 * abs(cross(quad, np.roll(quad, -1, axis=0)).sum())
        pitch_area = self.calibration.length_m * self.calibration.width_m
        return bool((np.sign(turns) == np.sign(turns[0])).all() and 4.0 < area < 4 * pitch_area)

    def _shift_px(self, h_a: np.ndarray, h_b: np.ndarray) -> float:
        """How far (input px) two homographies put the frame's lower-half corners apart."""
        quad = self._ground_quad_m(h_a)
        if quad is None:
            return float("inf")
        back, _ = project_points(np.linalg.inv(h_b), quad)
        w, h = self.g.source_w, self.g.source_h
        corners = np.array([[0, h / 2], [w, h / 2], [w, h], [0, h]], np.float64)
        return float(np.abs(back - corners).max() * self.g.scale)

    def _reacquire(self, view: _View) -> np.ndarray | None:
        best, best_count = None, 0
        for key_view, key_h in reversed(self.keyframes):
            step, count = self._register(key_view, view)
            if step is not None and count > best_count:
                best, best_count = key_h @ np.linalg.inv(step), count
        if best is None:
            best = self._search_markings(view)
        if best is not None:
            self.reacquired += 1
        return best

    def _search_markings(self, view: _View) -> np.ndarray | None:
        """Find the pitch from its markings alone: the pan, tilt and zoom of the reference
        camera whose projected markings hit the most line pixels, refined by `_refine`."""
        if self.mount is None or int((view.dist_px == 0).sum()) < MIN_SEARCH_LINE_PIXELS:
            return None  # a close-up or a crowd shot: nothing to find
        m = self.mount
        ground = np.c_[self.model_coarse_m, np.zeros(len(self.model_coarse_m))]
        cam = (ground - m.centre_m) @ m.rotation.T  # (N, 3) in the reference camera's axes
        up = m.rotation @ np.array([0.0, 0.0, 1.0])
        pans = np.radians(np.arange(-SEARCH_PAN_DEG, SEARCH_PAN_DEG + 0.1, SEARCH_STEP_DEG))
        tilts = np.radians(np.arange(-SEARCH_TILT_DEG, SEARCH_TILT_DEG + 0.1, SEARCH_STEP_DEG))
        zooms = np.exp(np.arange(np.log(SEARCH_ZOOM[0]), np.log(SEARCH_ZOOM[1]), 0.06))
        turned = []
        for pan in pans:
            rp = cv2.Rodrigues(up * pan)[0]
            for tilt in tilts:
                turned.append(cam @ (cv2.Rodrigues(np.array([tilt, 0.0, 0.0]))[0] @ rp).T)
        turned = np.stack(turned)  # (P*T, N, 3)
        front = turned[..., 2] > 0.5
        normal = turned[..., :2] / np.where(front, turned[..., 2], 1.0)[..., None]
        height, width = view.dist_px.shape
        scores = np.full((len(turned), len(zooms)), -np.inf)
        for z, zoom in enumerate(zooms):
            src = normal * (m.focal_px * zoom) + np.array(m.principal_px)
            inp = self._to_input(src.reshape(-1, 2)).reshape(src.shape)
            xy = np.floor(inp).astype(np.int64)
            inside = front & (xy[..., 0] >= 0) & (xy[..., 0] < width)
            inside &= (xy[..., 1] >= 0) & (xy[..., 1] < height)
            xs, ys = np.where(inside, xy[..., 0], 0), np.where(inside, xy[..., 1], 0)
            on_grass = inside & view.usable[ys, xs]
            hit = on_grass & (view.dist_px[ys, xs] <= SEARCH_HIT_PX)
            scores[:, z] = hit.sum(axis=1) - 0.5 * (on_grass & ~hit).sum(axis=1)
        best_h, best_support = None, 0.0
        for flat in np.argsort(scores, axis=None)[::-1][:SEARCH_CANDIDATES]:
            turn, z = np.unravel_index(flat, scores.shape)
            pan, tilt = pans[turn // len(tilts)], tilts[turn % len(tilts)]
            h = m.homographies(np.array([pan]), np.array([tilt]), np.array([zooms[z]]))[0]
            h = self._refine(view, h, SEARCH_RADII_PX)
            support, in_view = self._line_support(view, h)
            plausible = self._plausible(h)
            if plausible and in_view >= SEARCH_MIN_MODEL_POINTS and support > best_support:
                best_h, best_support = h, support
        return best_h if best_support >= SEARCH_MIN_SUPPORT else None

    def _moved_to(self, h: np.ndarray | None) -> None:
        """Remember the motion from the last frame to this one (None: this frame is lost)."""
        if h is None or self.previous_h is None:
            self.velocity = None
        else:
            step = np.linalg.inv(h) @ self.previous_h
            self.velocity = step / step[2, 2]
        self.previous_h = h

    def _accept(
        self, view: _View, h: np.ndarray, confirmed: bool, support: float = float("nan")
    ) -> FrameCamera:
        self._moved_to(h)
        self.was_covered = True
        self.anchor = (view, h)
        self.unconfirmed = 0 if confirmed else self.unconfirmed + 1
        self.covered += 1
        self._since_keyframe += 1
        if confirmed and self._since_keyframe >= KEYFRAME_EVERY:
            self._since_keyframe = 0
            # The reference frame stays first; recent frames replace older ones.
            self.keyframes = self.keyframes[:1] + self.keyframes[1:][-(KEYFRAMES - 1) :]
            self.keyframes.append((view, h))
        return FrameCamera(h, True, False, support)

    def _hold(self, view: _View, h: np.ndarray) -> FrameCamera:
        self._moved_to(h)
        self.was_covered = True
        self.covered += 1
        return FrameCamera(h, True, False, float("nan"))

    def _skip(self, cut: bool) -> FrameCamera:
        self._moved_to(None)
        self.was_covered = False
        return FrameCamera(np.full((3, 3), np.nan), False, cut, 0.0)

    def summary(self) -> dict:
        return {
            "tracked": self.moved,
            "frames": self.frames,
            "covered_frames": self.covered,
            "skipped_frames": self.frames - self.covered,
            "covered_share": round(self.covered / self.frames, 4) if self.frames else 0.0,
            "cuts": self.cuts,
            "reacquired": self.reacquired,
        }


@dataclasses.dataclass(frozen=True)
class BatchCameras:
    """The tracker's answers for the frames of one batch."""

    image_to_pitch: np.ndarray  # float64 (N, 3, 3), NaN where not covered
    covered: np.ndarray  # bool (N,)
    cut: np.ndarray  # bool (N,)


def track_batch(tracker: CameraTracker, batch: FrameBatch) -> BatchCameras:
    answers = [tracker.update(image) for image in batch.images_rgb]
    return BatchCameras(
        image_to_pitch=np.stack([a.image_to_pitch for a in answers]).astype(np.float64),
        covered=np.array([a.covered for a in answers], bool),
        cut=np.array([a.cut for a in answers], bool),
    )


# The reference frame's markings must mostly lie on the calibration's projected lines. Right
# calibrations score 0.87-1.0 on the project's renders (7 cameras and looks, 640x360 to
# 1080p; thin far lines and players standing on lines miss); swapped point pairs that pass
# the other checks scored 0.08-0.53, and another frame's view of a panning camera less.
MIN_REFERENCE_SUPPORT = 0.6
# Fewer line pixels than this in the reference frame: nothing to check against.
MIN_REFERENCE_LINE_PIXELS = 300
REFERENCE_HIT_PX = 4.0


def reference_support(tracker: CameraTracker, image_rgb: np.ndarray) -> tuple[float, int, int]:
    """Share of the projected markings within 4 px of a line pixel, their count, and the
    frame's line pixels."""
    view = tracker._view(image_rgb)
    _, inp = tracker._model_in_view(view, tracker.calibration.image_to_pitch)
    line_pixels = int((view.dist_px == 0).sum())
    if len(inp) == 0:
        return 0.0, 0, line_pixels
    xy = np.floor(inp).astype(np.int64)
    hits = view.dist_px[xy[:, 1], xy[:, 0]] <= REFERENCE_HIT_PX
    return float(hits.mean()), len(inp), line_pixels


def check_reference(
    tracker: CameraTracker, image_rgb: np.ndarray, label: str, frame_index: int
) -> None:
    """UserError when the calibration's pitch lines miss the reference frame's markings."""
    support, in_view, line_pixels = reference_support(tracker, image_rgb)
    if line_pixels < MIN_REFERENCE_LINE_PIXELS:
        return  # no markings to judge by (a plain surface, a dark frame): trust the user
    # Markings that land in the frame but not on what looks like grass (a pitch of another
    # colour) cannot be judged either.
    if in_view < MIN_MODEL_POINTS:
        if tracker.markings_on_frame() >= MIN_MODEL_POINTS:
            return
        raise UserError(
            f"{label}: the pitch lines projected with this calibration fall outside frame "
            f"{frame_index}; check the point order or the reference_frame"
        )
    if support < MIN_REFERENCE_SUPPORT:
        raise UserError(
            f"{label}: the pitch lines projected with this calibration miss the markings in "
            f"frame {frame_index} ({support:.0%} of them within {REFERENCE_HIT_PX:g} px of a "
            "line); check the point order or the reference_frame (see calibration_preview.png "
            "from `gpu-analysis calibrate`)"
        )


PREVIEW_FILE = "calibration_preview.png"
# A tracked preview every this many minutes of video: enough to see tracking hold over a
# match (18 over 90 minutes), few enough to glance through.
PREVIEW_EVERY_MIN = 5


def periodic_preview_name(timestamp_s: float) -> str | None:
    """calibration_preview_<mm>m.png for the first frames at or after each 5-minute mark."""
    minute = int(timestamp_s // 60)
    if minute == 0 or minute % PREVIEW_EVERY_MIN:
        return None
    return f"calibration_preview_{minute:02d}m.png"


def preview_png(
    image_rgb: np.ndarray,
    geometry: Letterbox,
    calibration: Calibration,
    image_to_pitch: np.ndarray,
    label: str,
) -> bytes:
    """The letterboxed frame (padding cut off) with the pitch lines projected over it."""
    g = geometry
    crop = image_rgb[g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w]
    sx, sy = g.source_w / g.resized_w, g.source_h / g.resized_h
    h_crop = image_to_pitch @ np.diag([sx, sy, 1.0])
    lens = calibration.distortion
    lens = None if lens is None else lens.scaled(1 / sx, 1 / sy)
    drawn = draw_pitch_lines(
        np.ascontiguousarray(crop[..., ::-1]), h_crop, calibration.length_m,
        calibration.width_m, lens, label=label,
    )  # fmt: skip
    return png_bytes(drawn)


@dataclasses.dataclass(frozen=True)
class Mount:
    """The camera of the reference frame as a pinhole: where it stands and how it looks.

    Broadcast and auto-follow cameras turn and zoom on a fixed mount, so after a cut the
    main camera's view is found among pans, tilts and zooms of the reference camera.
    """

    focal_px: float
    rotation: np.ndarray  # world (pitch X, Y, up-or-down) -> camera
    centre_m: np.ndarray  # the camera's position in pitch metres
    principal_px: tuple[float, float]

    @classmethod
    def from_homography(cls, image_to_pitch: np.ndarray, width: int, height: int):
        """Decompose the reference homography (principal point at the centre, square
        pixels); None when it is not a pinhole camera's view of the ground."""
        cx, cy = width / 2.0, height / 2.0
        g = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]]) @ np.linalg.inv(image_to_pitch)
        g1, g2 = g[:, 0], g[:, 1]
        estimates = []
        den = g1[2] * g2[2]
        if abs(den) > 1e-12:
            estimates.append(-(g1[0] * g2[0] + g1[1] * g2[1]) / den)
        den = g1[2] ** 2 - g2[2] ** 2
        if abs(den) > 1e-12:
            estimates.append((g2[0] ** 2 + g2[1] ** 2 - g1[0] ** 2 - g1[1] ** 2) / den)
        f2 = [e for e in estimates if e > 0]
        if not f2:
            return None
        focal = float(np.sqrt(np.median(f2)))
        k_inv = np.diag([1 / focal, 1 / focal, 1.0])
        a = k_inv @ g
        scale = np.sqrt(np.linalg.norm(a[:, 0]) * np.linalg.norm(a[:, 1]))
        a = a / scale
        # The pitch is in front of the camera: positive depth at the first column's point.
        if (a[:, 2])[2] < 0:
            a = -a
        r = np.column_stack([a[:, 0], a[:, 1], np.cross(a[:, 0], a[:, 1])])
        u, _, vt = np.linalg.svd(r)
        r = u @ vt
        centre = -r.T @ a[:, 2]
        return cls(focal, r, centre, (cx, cy))

    def homographies(self, pans: np.ndarray, tilts: np.ndarray, zooms: np.ndarray):
        """image->pitch homographies (K, 3, 3) for every (pan, tilt, zoom) given (radians)."""
        up = self.rotation @ np.array([0.0, 0.0, 1.0])  # the vertical, in camera axes
        out = []
        for pan, tilt, zoom in zip(pans, tilts, zooms, strict=True):
            turn = cv2.Rodrigues(up * pan)[0] @ cv2.Rodrigues(np.array([tilt, 0.0, 0.0]))[0]
            r = turn @ self.rotation
            t = -r @ self.centre_m
            k = np.array(
                [[self.focal_px * zoom, 0, self.principal_px[0]],
                 [0, self.focal_px * zoom, self.principal_px[1]], [0, 0, 1.0]]
            )  # fmt: skip
            g = k @ np.column_stack([r[:, 0], r[:, 1], t])
            h = np.linalg.inv(g)
            out.append(h / h[2, 2])
        return np.stack(out)
