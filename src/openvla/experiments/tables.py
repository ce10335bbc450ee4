"""The experiment's tables, plot, model card and REPORT.md, from the files its stages left behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def pretraining_lines(cfg: Any, out: Path) -> list[str]:
    training = _load(out / "pretrain" / "training.json")
    info = _load(out / "data" / "pretrain" / "meta" / "info.json") or {}
    lines = [f"- Data: Meta-World v3, {len(cfg.train_tasks)} tasks x {cfg.demos_per_task} scripted-expert demos "
             f"({info.get('total_episodes', '?')} episodes, {info.get('total_frames', '?')} frames, corner2 camera "
             f"at {cfg.image_size} px), one dataset, frames drawn uniformly (each task weighs its share of frames).",
             f"- Model: the `{cfg.preset}` preset from scratch, {_model_words(cfg.model)}.",
             f"- Training: {cfg.pretrain_steps} steps x batch {cfg.batch_size}, lr {cfg.pretrain_lr:g} cosine."]
    if training:
        lines.append(f"- Cost here: {training['train_s'] / 60:.1f} min, peak RSS {training['peak_rss_mb']:.0f} MB, "
                     f"{training['total']:,} parameters.")
    return lines


def _model_words(model: dict[str, Any]) -> str:
    parts = [f"{model.get('action_head', 'tokens')} head", f"action chunk {model.get('action_chunk', 1)}"]
    return ", ".join(parts + (["proprio"] if model.get("proprio_dim") else []))


def generalist_lines(out: Path, per_task: bool = True) -> list[str]:
    info = _load(out / "generalist_eval" / "eval_info.json")
    if not info:
        return ["(not evaluated yet: `openvla experiment evaluate`)"]
    cfg = info["config"]
    lines = [f"{info['overall']['n_episodes']} episodes ({cfg['episodes_per_task']} per task, held-out seeds, "
             f"seed {cfg['seed']}): **{info['overall']['pc_success']:.1f}%** success.", "",
             "| group | tasks | success % |", "| --- | ---: | ---: |"]
    counts: dict[str, int] = {}
    for t in info["per_task"]:
        counts[t["task_group"]] = counts.get(t["task_group"], 0) + 1
    for group, m in info["per_group"].items():
        lines.append(f"| {group} | {counts.get(group, 0)} | {m['pc_success']:.1f} |")
    if per_task:
        lines += ["", "| task | group | success % |", "| --- | --- | ---: |"]
        lines += [f"| {t['task']} | {t['task_group']} | {t['metrics']['pc_success']:.0f} |" for t in info["per_task"]]
    return lines


def adaptation_results(cfg: Any, out: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    table: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for k in cfg.adapt_demos:
        for row in cfg.rows:
            found = [_load(out / "adapt" / f"{k}-demos" / row / f"seed{s}" / "result.json") for s in cfg.seeds]
            table[(row, k)] = [r for r in found if r]
    return table


def adaptation_lines(cfg: Any, out: Path) -> list[str]:
    table = adaptation_results(cfg, out)
    if not any(table.values()):
        return ["(not run yet: `openvla experiment adapt`)"]
    head = " | ".join(f"{k} demos: success % mean +- std (seeds)" for k in cfg.adapt_demos)
    lines = [f"| start | {head} | trainable params (% of total) | peak RSS MB | train time s |",
             "| --- | " + " | ".join("---:" for _ in cfg.adapt_demos) + " | ---: | ---: | ---: |"]
    for row in cfg.rows:
        cells, every = [], []
        for k in cfg.adapt_demos:
            results = table[(row, k)]
            every += results
            s = [r["success"] for r in results]
            cells.append(f"{np.mean(s):.1f} +- {np.std(s):.1f} ({', '.join(f'{v:.0f}' for v in s)})" if s else "-")
        if not every:
            continue
        label = "from scratch" if row == "scratch" else f"generalist, {row}"
        lines.append(f"| {label} | {' | '.join(cells)} | {every[0]['trainable']:,} ({every[0]['trainable_pc']:.1f}%) | "
                     f"{np.mean([r['peak_rss_mb'] for r in every]):.0f} | "
                     f"{np.mean([r['train_s'] for r in every]):.0f} |")
    return lines


def adaptation_task_lines(cfg: Any, out: Path) -> list[str]:
    """Success per held-out task for each start and demo count (mean over seeds): where the successes are."""
    table = adaptation_results(cfg, out)
    cols = [(row, k) for row in cfg.rows for k in cfg.adapt_demos if table[(row, k)]]
    if not cols:
        return []
    lines = ["| task | " + " | ".join(f"{r} {k}" for r, k in cols) + " |",
             "| --- | " + " | ".join("---:" for _ in cols) + " |"]
    for task in cfg.test_tasks:
        cells = [np.mean([r["per_task"].get(task, np.nan) for r in table[c]]) for c in cols]
        lines.append(f"| {task} | " + " | ".join(f"{v:.0f}" for v in cells) + " |")
    return lines


def plot_adaptation(cfg: Any, out: Path) -> Path | None:
    """Success vs demos per task, one line per start (mean and spread over seeds)."""
    table = adaptation_results(cfg, out)
    if not any(table.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in cfg.rows:
        ks = [k for k in cfg.adapt_demos if table[(row, k)]]
        if not ks:
            continue
        s = [[r["success"] for r in table[(row, k)]] for k in ks]
        ax.errorbar(ks, [np.mean(v) for v in s], yerr=[np.std(v) for v in s], marker="o", capsize=3,
                    label="from scratch" if row == "scratch" else row, linestyle="--" if row == "scratch" else "-")
    ax.set_xlabel("demonstrations per held-out task")
    ax.set_ylabel("success % (mean +- std over seeds)")
    ax.set_xticks(cfg.adapt_demos)
    ax.set_ylim(-5, 105)
    ax.set_title(f"Adapting to {len(cfg.test_tasks)} unseen Meta-World tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "success_vs_demos.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def language_lines(out: Path) -> list[str]:
    rows = _load(out / "language" / "language.json")
    if not rows:
        return ["(not run yet: `openvla experiment language`)"]
    lines = ["| scene's task | told its own instruction | told the partner's (task) |", "| --- | ---: | --- |"]
    lines += [f"| {r['scene']} | {r['own']:.0f}% | {r['swapped']:.0f}% ({r['told']}) |" for r in rows]
    lines.append(f"| mean | {np.mean([r['own'] for r in rows]):.1f}% | {np.mean([r['swapped'] for r in rows]):.1f}% |")
    return lines


def model_card(cfg: Any, out: Path) -> str:
    return "\n".join([
        f"# Meta-World generalist (openvla `{cfg.preset}` preset)", "",
        f"A vision-language-action policy pretrained on {len(cfg.train_tasks)} Meta-World v3 tasks with "
        f"`openvla experiment pretrain`; the held-out tasks ({', '.join(cfg.test_tasks)}) were never seen. Load "
        "with `VLAPolicy.from_pretrained(this_folder)` or serve with `openvla serve --checkpoint this_folder`.", "",
        "## Training", *pretraining_lines(cfg, out), "",
        "## Results: held-out seeds of its tasks", *generalist_lines(out, per_task=False), ""])


def write_report(cfg: Any, out: Path) -> Path:
    plot = plot_adaptation(cfg, out)
    lines = ["# ML45 in miniature: a pretrained generalist, few-demo adaptation, language", "",
             "## 1. Pretraining", *pretraining_lines(cfg, out), "",
             "## 2. The generalist out of the box", *generalist_lines(out), "",
             f"## 3. Adaptation to {', '.join(cfg.test_tasks)}",
             f"{cfg.adapt_steps} steps x batch {cfg.batch_size}, lr {cfg.adapt_lr:g} cosine for every row; "
             f"{cfg.adapt_eval_episodes} held-out episodes per task; seeds {cfg.seeds}.", "",
             *adaptation_lines(cfg, out), "",
             "Success % per held-out task (mean over seeds; columns: start, demos per task):", "",
             *adaptation_task_lines(cfg, out), ""]
    if plot:
        lines += [f"![success vs demos]({plot.name})", ""]
    lines += ["## 4. Language grounding", *language_lines(out), ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    return path
