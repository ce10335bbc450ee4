"""Evaluation results: eval_info.json (LeRobot's names), a success plot, a markdown table and mp4 videos."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

GROUP_ORDER = ("easy", "medium", "hard", "very_hard")


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """LeRobot's aggregate metrics over some episode rows."""
    if not rows:
        return {"avg_sum_reward": float("nan"), "avg_max_reward": float("nan"), "pc_success": float("nan"),
                "n_episodes": 0, "n_errors": 0, "video_paths": []}
    return {
        "avg_sum_reward": float(np.mean([r["sum_reward"] for r in rows])),
        "avg_max_reward": float(np.mean([r["max_reward"] for r in rows])),
        "pc_success": float(np.mean([r["success"] for r in rows]) * 100),
        "n_episodes": len(rows),
        "n_errors": sum(r["error"] is not None for r in rows),
        "video_paths": [r["video_path"] for r in rows if r.get("video_path")],
    }


def _ordered(keys: set[str] | list[str]) -> list[str]:
    """Difficulty groups in their natural order, anything else alphabetically after them."""
    return sorted(keys, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))


def build_eval_info(rows: list[dict[str, Any]], config: dict[str, Any], eval_s: float, n_run: int,
                    complete: bool) -> dict[str, Any]:
    """eval_info with per_episode, per_task, per_group and overall results (pc_success, avg_sum_reward, ...).

    `n_run` is how many of the rows this invocation ran (the rest were resumed from disk).
    """
    order = {task: i for i, task in enumerate(config["tasks"])}
    rows = sorted(rows, key=lambda r: (order.get(r["task"], len(order)), r["episode_ix"]))
    per_task = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = {
            "sum_rewards": [r["sum_reward"] for r in task_rows],
            "max_rewards": [r["max_reward"] for r in task_rows],
            "successes": [r["success"] for r in task_rows],
            **_aggregate(task_rows),
        }
        per_task.append({"task_group": task_rows[0]["group"], "task": task, "metrics": metrics})
    groups = _ordered({r["group"] for r in rows})
    per_group = {g: _aggregate([r for r in rows if r["group"] == g]) for g in groups}
    overall = {**_aggregate(rows), "eval_s": eval_s, "eval_ep_s": eval_s / max(1, n_run)}
    errors = Counter(r["error"] for r in rows if r["error"] is not None)
    return {"per_episode": rows, "per_task": per_task, "per_group": per_group, "overall": overall,
            "errors": dict(errors.most_common()), "config": config, "complete": complete}


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """Encode uint8 HxWx3 frames as an H.264 mp4 (odd sizes are padded by one pixel)."""
    import imageio.v3 as iio

    video = np.stack(frames)
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, video, plugin="pyav", codec="libx264", fps=fps)
    return path


def plot_success(info: dict[str, Any], path: Path) -> Path:
    """A PNG with success per task (coloured by group) and per group, with the overall rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = info["per_task"]
    groups = list(info["per_group"])
    colours = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    height = max(3.0, 0.28 * len(tasks) + 1.2)
    fig, (ax_t, ax_g) = plt.subplots(1, 2, figsize=(12, height), width_ratios=[3, 1.3])
    names = [t["task"] for t in tasks]
    values = [t["metrics"]["pc_success"] for t in tasks]
    bars = ax_t.barh(range(len(tasks)), values, color=[colours[t["task_group"]] for t in tasks])
    ax_t.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax_t.set_yticks(range(len(tasks)), names, fontsize=8)
    ax_t.invert_yaxis()
    ax_t.set_xlim(0, 108)
    ax_t.set_xlabel("success (%)")
    ax_t.set_title("per task")
    group_values = [info["per_group"][g]["pc_success"] for g in groups]
    ax_g.bar_label(ax_g.bar(range(len(groups)), group_values, color=[colours[g] for g in groups]),
                   fmt="%.1f", fontsize=8)
    ax_g.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    overall = info["overall"]["pc_success"]
    ax_g.axhline(overall, color="black", linestyle="--", linewidth=1)
    ax_g.set_ylim(0, 115)
    ax_g.set_ylabel("success (%)")
    ax_g.set_title(f"per group (dashed: overall {overall:.1f}%)")
    config = info["config"]
    fig.suptitle(f"{config['policy']} on {config['env']}: {info['overall']['n_episodes']} episodes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_markdown(info: dict[str, Any]) -> str:
    """A short markdown report: overall and per-group success, then per task, then failure reasons."""
    config, overall = info["config"], info["overall"]
    lines = [
        f"# {config['policy']} on {config['env']}" + ("" if info["complete"] else " (incomplete)"),
        "",
        f"{overall['n_episodes']} episodes, seed {config['seed']}, "
        f"max steps {config['max_steps'] or 'default'}, "
        f"open-loop steps {config['open_loop_steps'] or 'whole chunk'}, image {config['image_size']}px; "
        f"this run took {overall['eval_s']:.0f} s.",
        "",
        "| group | episodes | success (%) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {g} | {m['n_episodes']} | {m['pc_success']:.1f} |" for g, m in info["per_group"].items()]
    lines += [f"| **overall** | {overall['n_episodes']} | **{overall['pc_success']:.1f}** |", "",
              "| task | group | episodes | success (%) | errors |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {t['task']} | {t['task_group']} | {t['metrics']['n_episodes']} | "
              f"{t['metrics']['pc_success']:.1f} | {t['metrics']['n_errors']} |" for t in info["per_task"]]
    if info["errors"]:
        lines += ["", "Episodes cut short:", ""]
        lines += [f"- {n} x {reason}" for reason, n in info["errors"].items()]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, info: dict[str, Any]) -> None:
    """Write eval_info.json, success.png and summary.md into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_info.json").write_text(json.dumps(info, indent=2))
    if info["per_task"]:
        plot_success(info, out_dir / "success.png")
    (out_dir / "summary.md").write_text(summary_markdown(info))
