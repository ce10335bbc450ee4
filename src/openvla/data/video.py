"""MP4 encoding and decoding of camera streams with PyAV: sequential episode ranges and random frames."""

from __future__ import annotations

import os
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np

PREFERRED_CODECS = ("libsvtav1", "libx264", "h264", "mpeg4")


def _av():
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder otherwise
    import av

    return av


def pick_codec(preferred: str = "libsvtav1") -> str:
    """The preferred encoder if this PyAV build has it, else the first available of ``PREFERRED_CODECS``."""
    av = _av()
    for name in (preferred, *PREFERRED_CODECS):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises several kinds for a missing codec
            continue
    raise RuntimeError("this PyAV build has no usable video encoder")


def codec_family(encoder: str) -> str:
    """The codec name LeRobot records in info.json (``av1`` for ``libsvtav1``, ``h264`` for ``libx264``)."""
    return _av().codec.Codec(encoder, "w").canonical_name


class VideoEncoder:
    """One mp4 file of one camera; episodes are appended one after another at ``fps``."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str = "libsvtav1",
                 crf: int = 30, gop: int = 2):
        if width % 2 or height % 2:
            raise ValueError(f"{path}: video needs even frame sizes for yuv420p, got {width}x{height}")
        av = _av()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fps = fps
        self.frames_written = 0
        self._container = av.open(str(path), "w")
        options = {"g": str(gop), "crf": str(crf)}
        self._stream = self._container.add_stream(codec, rate=fps, options=options)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._av = av

    def add(self, frames: np.ndarray) -> None:
        """Encode uint8 [T, H, W, 3] frames after the ones already in the file."""
        for frame in frames:
            vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.frames_written
            vf.time_base = Fraction(1, self.fps)
            self._container.mux(self._stream.encode(vf))
            self.frames_written += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode())
        self._container.close()


def _frame_index(frame, stream, start: float, fps: int) -> int:
    t = frame.time if frame.time is not None else float(frame.pts * stream.time_base)
    return int(round((t - start) * fps))


def _decode_exact(container, stream, start: float, count: int, fps: int) -> list[np.ndarray | None]:
    """The ``count`` frames shown from ``start`` seconds on (None where the file has none), exactly.

    A seek lands on a keyframe picked by decoding time. With B-frames the wanted frame can come before that
    keyframe in display order, and after a seek to an HEVC open-GOP (CRA) keyframe the decoder drops the
    leading frames that reference the previous GOP. So when a wanted frame did not come out, seek again
    from further back (1, 2, 4, ... frames), down to the start of the file.
    """
    back = 0.0
    while True:
        target = max(start - back, 0.0)
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        out: list[np.ndarray | None] = [None] * count
        for frame in container.decode(stream):
            i = _frame_index(frame, stream, start, fps)
            if 0 <= i < count:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= count - 1:
                break
        if target == 0.0 or all(f is not None for f in out):
            return out
        back = 2 * back if back else 1 / fps


def decode_range(path: Path, start: float, count: int, fps: int, where: str = "") -> np.ndarray:
    """Decode ``count`` frames from ``start`` seconds: uint8 [count, H, W, 3]; a clear error if short."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            out = _decode_exact(container, stream, start, count, fps)
    except (av.error.FFmpegError, IndexError) as err:
        raise ValueError(f"{path}: cannot decode video{where}: {err}") from err
    missing = [i for i, f in enumerate(out) if f is None]
    if missing:
        raise ValueError(f"{path}: corrupt or truncated video{where}: {len(missing)} of {count} frames "
                         f"missing from {start:.3f}s (first missing frame {missing[0]})")
    return np.stack(out)


class VideoFrameReader:
    """Random access to single frames, keeping a few containers open (one reader per process)."""

    def __init__(self, max_open: int = 8):
        self.max_open = max_open
        self._open: OrderedDict[str, object] = OrderedDict()

    def _container(self, path: Path):
        key = str(path)
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        container = _av().open(key)
        container.streams.video[0].thread_type = "AUTO"
        self._open[key] = container
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return container

    def frame(self, path: Path, timestamp: float, fps: int, where: str = "") -> np.ndarray:
        """The frame shown at ``timestamp`` seconds (nearest frame of a ``fps`` stream), uint8 HxWx3."""
        av = _av()
        try:
            container = self._container(path)
            frame = _decode_exact(container, container.streams.video[0], timestamp, 1, fps)[0]
        except (av.error.FFmpegError, IndexError) as err:
            self._open.pop(str(path), None)
            raise ValueError(f"{path}: cannot decode video{where}: {err}") from err
        if frame is None:
            raise ValueError(f"{path}: corrupt or truncated video{where}: no frame at {timestamp:.3f}s (decoded "
                             f"from the start of the file)")
        return frame
