"""Milliseconds per random single frame from an mp4 for the codecs LeRobot writes (av1, h264, hevc).

    .venv/bin/python benchmarks/video_seek.py        # 300 frames of 224x224 at GOP 2 (LeRobot's), 200 random reads

Each read goes through ``VideoFrameReader.frame`` (seek, then decode until the wanted frame), as the loader does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from openvla.data.video import VideoEncoder, VideoFrameReader


def main() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    frames = np.stack([((np.stack([xx + t * 3, yy, xx + yy + t * 5], -1) + rng.integers(0, 8, (224, 224, 3)))
                        % 256).astype(np.uint8) for t in range(300)])
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("libsvtav1", "libx264", "libx265"):
            path = Path(tmp) / f"{codec}.mp4"
            encoder = VideoEncoder(path, 10, 224, 224, codec, gop=2)
            encoder.add(frames)
            encoder.close()
            reader, picks = VideoFrameReader(), rng.integers(0, len(frames), 200)
            reader.frame(path, 0.0, 10)  # open the file outside the timing
            start = time.perf_counter()
            for i in picks:
                reader.frame(path, i / 10, 10)
            print(f"{codec}: {(time.perf_counter() - start) / len(picks) * 1000:.2f} ms per random frame")


if __name__ == "__main__":
    main()
