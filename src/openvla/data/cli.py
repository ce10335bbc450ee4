"""``openvla data convert | info | stats``: dataset conversion and inspection from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openvla.data.convert import SOURCES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its subcommands to the top-level parser."""
    data = subparsers.add_parser("data", help="convert, inspect and summarise robot datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    c = sub.add_parser("convert", help="convert RLDS/TFDS, a folder of .npz episodes or LeRobot v2 into LeRobot v3.0")
    c.add_argument("src", type=Path, help="source dataset folder")
    c.add_argument("dst", type=Path, help="new dataset folder")
    c.add_argument("--from", dest="source", default="auto", choices=list(SOURCES))
    c.add_argument("--name", help="dataset name (RLDS: the OXE dataset name, e.g. bridge_orig; default: folder name)")
    c.add_argument("--fps", type=int, help="frames per second (default: the source's, or 10)")
    c.add_argument("--image-format", default="png", choices=["png", "jpeg", "video"])
    c.add_argument("--cameras", nargs="+", help="cameras to keep (RLDS roles: primary secondary wrist)")
    c.add_argument("--max-episodes", type=int)
    c.add_argument("--robot-type")
    c.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    c.add_argument("--no-verify-checksums", dest="verify_checksums", action="store_false",
                   help="RLDS: skip the TFRecord CRC check of every record (faster; flipped bytes go unnoticed)")
    c.add_argument("--jpeg-decoder", default="reference", choices=["reference", "accurate"],
                   help="RLDS JPEGs: the reference's pixels (TensorFlow's fast integer IDCT, the default) or "
                   "libjpeg's accurate IDCT (PIL/OpenCV)")
    c.set_defaults(func=_convert)

    i = sub.add_parser("info", help="episodes, frames, tasks, cameras, shapes and statistics of a dataset")
    i.add_argument("path", type=Path)
    i.add_argument("--json", action="store_true", help="print machine-readable JSON")
    i.add_argument("--no-check-files", dest="check_files", action="store_false",
                   help="skip reading every video file's packets / TFRecord header (the check for missing, "
                   "truncated or short files; exit status 1 when it finds any)")
    i.set_defaults(func=_info)

    s = sub.add_parser("stats", help="compute (or read cached) dataset_statistics.json of a LeRobot dataset")
    s.add_argument("path", type=Path)
    s.add_argument("--recompute", action="store_true", help="ignore the cached file")
    s.add_argument("--mask", help="action normalisation mask as 0/1 per dimension, e.g. 1,1,1,1,1,1,0")
    s.add_argument("--output", type=Path, help="also write the statistics to this file")
    s.set_defaults(func=_stats)


def _convert(args: argparse.Namespace) -> int:
    from openvla.data.convert import convert

    result = convert(args.src, args.dst, args.source, args.name, args.fps, args.image_format, args.cameras,
                     args.max_episodes, args.overwrite, args.robot_type,
                     verify_checksums=args.verify_checksums, jpeg_decoder=args.jpeg_decoder)
    print(f"wrote {result.episodes} episodes, {result.frames} frames to {result.path}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} episodes:")
        for line in result.skipped:
            print(f"  {line}")
    return 0


def _summary(path: Path, check_files: bool = True) -> dict:
    from openvla.data import check
    from openvla.data.convert import detect_source

    if detect_source(path) == "rlds":
        from openvla.data.rlds import RLDSDataset

        ds = RLDSDataset(path)
        return {"format": "RLDS/TFDS", "name": ds.name, "path": str(ds.path), "episodes": len(ds),
                "features": {f.key: {"kind": f.kind, "dtype": f.dtype, "shape": list(f.shape)} for f in ds.features},
                "problems": check.shard_problems(ds) if check_files else []}
    from openvla.data.lerobot import LeRobotDataset
    from openvla.data.stats import load_or_compute_statistics

    ds = LeRobotDataset(path)
    cameras = {}
    for cam in ds.cameras:
        feature = ds.info["features"]["observation.images." + cam]
        codec = feature.get("info", {}).get("video.codec", "")
        cameras[cam] = {"shape": list(ds.camera_shape(cam)), "storage": f"{feature['dtype']} {codec}".strip()}
    out = {"format": f"LeRobot {ds.version}", "name": ds.name, "path": str(ds.root), "episodes": ds.num_episodes,
           "frames": ds.num_frames, "fps": ds.fps, "tasks": ds.tasks, "cameras": cameras,
           "action_dim": ds.action_dim, "state_dim": ds.state_dim, "extra": sorted(ds.extra),
           "problems": check.video_problems(ds) if check_files else []}
    if ds.num_frames:
        out["statistics"] = load_or_compute_statistics(ds)[ds.name]
    return out


def _fmt(values: list) -> str:
    return " ".join(f"{v:8.3f}" for v in values)


def _info(args: argparse.Namespace) -> int:
    info = _summary(args.path, args.check_files)
    status = 1 if info["problems"] else 0
    if args.json:
        print(json.dumps(info, indent=2))
        return status
    if info["format"].startswith("RLDS"):
        print(f"{info['name']}  ({info['format']}, {info['path']})\nepisodes  {info['episodes']}")
        for key, f in info["features"].items():
            print(f"  {key:50s} {f['kind']:7s} {f['dtype']:8s} {f['shape']}")
        return _print_problems(info["problems"])
    seconds = info["frames"] / info["fps"] if info["fps"] else 0
    print(f"{info['name']}  ({info['format']}, {info['path']})")
    print(f"episodes  {info['episodes']}\nframes    {info['frames']}  ({info['fps']} fps, {seconds:.1f} s)")
    print(f"tasks     {len(info['tasks'])}")
    for task in info["tasks"][:10]:
        print(f"  - {task}")
    if len(info["tasks"]) > 10:
        print(f"  ... and {len(info['tasks']) - 10} more")
    cams = ", ".join(f"{c} {'x'.join(map(str, v['shape']))} ({v['storage']})" for c, v in info["cameras"].items())
    print(f"cameras   {cams or 'none'}\naction    {info['action_dim']}\nstate     {info['state_dim']}")
    if info["extra"]:
        print(f"extra     {', '.join(info['extra'])}")
    stats = info.get("statistics")
    if stats:
        print(f"statistics ({stats['num_transitions']} transitions, {stats['num_trajectories']} trajectories)")
        for key in ("action", "proprio"):
            print(f"  {key}")
            for stat in ("q01", "q99", "mean", "std", "min", "max"):
                print(f"    {stat:4s} {_fmt(stats[key][stat])}")
            if "mask" in stats[key]:
                print(f"    mask {' '.join(f'{int(m):8d}' for m in stats[key]['mask'])}")
    return _print_problems(info["problems"])


def _print_problems(problems: list[str]) -> int:
    """Print the file problems found (exit status 1) or nothing (0)."""
    if problems:
        print(f"problems  {len(problems)} (files missing, truncated or corrupt; download them again)")
        for line in problems:
            print(f"  {line}")
    return 1 if problems else 0


def _stats(args: argparse.Namespace) -> int:
    from openvla.data.lerobot import LeRobotDataset
    from openvla.data.stats import load_or_compute_statistics, statistics_path

    mask = [bool(int(m)) for m in args.mask.split(",")] if args.mask else None
    ds = LeRobotDataset(args.path)
    stats = load_or_compute_statistics(ds, recompute=args.recompute, action_mask=mask)
    text = json.dumps(stats, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text)
    cache = statistics_path(ds.root)
    where = cache if cache.exists() else "the user cache (the dataset folder is read-only)"
    print(f"statistics cached in {where}", file=sys.stderr)
    return 0
