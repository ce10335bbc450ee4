"""Single video frames equal whole-file decoding for every codec LeRobot writes (AV1, H.264, HEVC), with
B-frames and HEVC's open GOPs, in files holding several episodes as LeRobot v3.0 lays them out."""

from __future__ import annotations

import av
import numpy as np
import pytest
from data_testutils import make_episodes

from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.video import VideoEncoder, VideoFrameReader, decode_range

FPS = 10


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:48]
    return np.stack([((np.stack([xx * 5 + t * 9, yy * 7, (xx + yy + t * 3) * 2], -1)
                       + rng.integers(0, 30, (32, 48, 3))) % 256).astype(np.uint8) for t in range(n)])


def _reordered(path):
    """Whether the file has frames stored out of display order (B-frames)."""
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    return any(b < a for a, b in zip(pts, pts[1:], strict=False))


@pytest.mark.parametrize("gop", [2, 12])
@pytest.mark.parametrize("codec", ["libsvtav1", "libx264", "libx265"])
def test_every_frame_equals_whole_file_decoding(tmp_path, codec, gop):
    path, lengths = tmp_path / "file-000.mp4", [12, 9, 15]  # three episodes in one file, as LeRobot v3.0
    encoder = VideoEncoder(path, FPS, 48, 32, codec, gop=gop)
    frames = _frames(sum(lengths))
    starts = np.cumsum([0] + lengths[:-1])
    for start, n in zip(starts, lengths, strict=True):
        encoder.add(frames[start:start + n])
    encoder.close()
    if codec == "libx265" or (codec == "libx264" and gop > 2):
        assert _reordered(path)  # B-frames: display order differs from decoding order
    whole = decode_range(path, 0.0, len(frames), FPS)
    errors = np.abs(whole[:, None].astype(int) - frames[None]).mean(axis=(2, 3, 4))  # [decoded, source]
    np.testing.assert_array_equal(errors.argmin(1), np.arange(len(frames)))  # lossy, but each the right picture
    reader = VideoFrameReader()
    for i in [*range(len(frames)), 7, 3, 30, 1, 0]:  # forwards, then jumping back
        np.testing.assert_array_equal(reader.frame(path, i / FPS, FPS), whole[i], err_msg=f"frame {i}")
    for start, n in zip(starts, lengths, strict=True):
        np.testing.assert_array_equal(decode_range(path, start / FPS, n, FPS), whole[start:start + n])


def test_hevc_lerobot_dataset_frames_match_episode_decoding(tmp_path):
    episodes = make_episodes(3, cameras=("image",), size=(32, 48), lengths=[12, 9, 15])
    write_dataset(tmp_path / "ds", episodes, fps=FPS, image_format="video", codec="libx265")
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.info["features"]["observation.images.image"]["info"]["video.codec"] == "hevc"
    assert _reordered(next((tmp_path / "ds" / "videos").rglob("*.mp4")))
    for i in range(ds.num_episodes):
        decoded = ds.episode(i).images["image"]
        start = int(ds.episode_starts[i])
        for j in range(len(decoded)):
            np.testing.assert_array_equal(ds.image("image", start + j), decoded[j], err_msg=f"episode {i} frame {j}")


def test_truncated_hevc_file_still_names_the_file(tmp_path):
    path = tmp_path / "file-000.mp4"
    encoder = VideoEncoder(path, FPS, 48, 32, "libx265")
    encoder.add(_frames(20))
    encoder.close()
    with pytest.raises(ValueError, match=r"file-000.mp4: corrupt or truncated video: no frame at 3.000s"):
        VideoFrameReader().frame(path, 3.0, FPS)
