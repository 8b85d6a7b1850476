"""`gpu-analysis calibrate`: a frame to read points from, then the calibration and its preview.

Without --points it writes frame N as a PNG (the user reads pixel positions of pitch
landmarks from it in any image viewer). With --points "x,y=X,Y;..." (pixels = pitch metres)
it writes the calibration file for that frame ("reference_frame": N, "image_size") and
`<out stem>.preview.png`: the frame with the pitch lines projected by the new calibration,
so a swapped point or a wrong frame shows at once; the same check `analyze` runs on the
reference frame is run here too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpu_analysis.engine.errors import UserError


def parse_points(text: str) -> tuple[list[list[float]], list[list[float]]]:
    """ "x,y=X,Y;..." -> image points (pixels) and pitch points (metres)."""
    image, pitch = [], []
    for n, pair in enumerate(p for p in text.replace("\n", ";").split(";") if p.strip()):
        try:
            left, right = pair.split("=")
            x, y = (float(v) for v in left.split(","))
            px, py = (float(v) for v in right.split(","))
        except ValueError:
            raise UserError(
                f'--points: pair {n + 1} is "{pair.strip()}"; write each as x,y=X,Y (pixels = '
                'pitch metres), pairs separated by ";", e.g. "412,610=0,0;1501,598=105,0"'
            ) from None
        image.append([x, y])
        pitch.append([px, py])
    return image, pitch


def _frame(video: str, index: int):
    """Frame `index` of the video (BGR, source size) and the video's facts."""
    from gpu_analysis.engine import steps
    from gpu_analysis.engine import video as _video

    facts = steps.probe(video)
    if not 0 <= index < facts.frame_count:
        raise UserError(f"--frame {index}: the video has frames 0..{facts.frame_count - 1}")
    for frame in _video.iter_sampled_frames(facts, facts.fps, _video.DecodeStats()):
        if frame.frame_index >= index:
            return frame.image_bgr, facts
    raise UserError(f"{video}: frame {index} cannot be decoded")


def calibrate(
    video: str,
    frame_index: int,
    out: str | Path,
    points: str | None = None,
    length_m: float = 105.0,
    width_m: float = 68.0,
) -> list[Path]:
    """Write the frame PNG, or the calibration and its preview; return the files written."""
    from gpu_analysis.engine import camera_tracking
    from gpu_analysis.engine.batching import letterbox, letterbox_geometry
    from gpu_analysis.engine.calibration import calibration_from_dict
    from gpu_analysis.engine.pitch_model import draw_pitch_lines, png_bytes

    image_bgr, facts = _frame(video, frame_index)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if points is None:
        png = out.with_name(f"{out.stem}.frame{frame_index}.png")
        png.write_bytes(png_bytes(image_bgr))
        return [png]
    image_pts, pitch_pts = parse_points(points)
    raw = {
        "pitch": {"length_m": length_m, "width_m": width_m},
        "image_points": image_pts,
        "pitch_points": pitch_pts,
        "image_size": [facts.width, facts.height],
        "reference_frame": frame_index,
    }
    calibration = calibration_from_dict(raw, str(out))
    preview = out.with_name(f"{out.stem}.preview.png")
    drawn = draw_pitch_lines(
        image_bgr,
        calibration.image_to_pitch,
        length_m,
        width_m,
        calibration.distortion,
        label=f"frame {frame_index}: projected pitch lines",
    )
    preview.write_bytes(png_bytes(drawn))
    # The preview is written first: when the check fails, it shows what is wrong.
    geometry = letterbox_geometry((facts.width, facts.height), (640, 384))
    tracker = camera_tracking.CameraTracker(calibration, geometry)
    camera_tracking.check_reference(
        tracker, letterbox(image_bgr, geometry), f"{out} (see {preview})", frame_index
    )
    out.write_text(json.dumps(raw, indent=2) + "\n")
    return [out, preview]


def _cmd_calibrate(args: argparse.Namespace) -> int:
    written = calibrate(args.video, args.frame, args.out, args.points, args.length_m, args.width_m)
    if args.points is None:
        print(
            f"wrote {written[0]}: read the pixel x,y of 4 or more pitch landmarks from it, "
            f'then run again with --points "x,y=X,Y;..." (X along the touchline from the left '
            "corner, Y across, metres)"
        )
    else:
        print(f"wrote {written[0]} and {written[1]} (check that the lines lie on the markings)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="write a frame to read pitch points from, or the calibration from those points",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("video", help="match video")
    p.add_argument("--frame", type=int, default=0, metavar="N", help="frame index (default 0)")
    p.add_argument("--out", required=True, metavar="CAL.json", help="calibration file to write")
    p.add_argument(
        "--points",
        metavar='"x,y=X,Y;..."',
        help="pixel = pitch-metre pairs read from the frame; without it the frame is written "
        '(write --points="-12,400=0,0;..." when a value starts with a minus sign)',
    )
    p.add_argument("--length-m", type=float, default=105.0, help="pitch length (default 105)")
    p.add_argument("--width-m", type=float, default=68.0, help="pitch width (default 68)")
    p.set_defaults(func=_cmd_calibrate)
