"""Meta-World render cost per frame, default vs fast settings, on this machine's headless GL.

    MUJOCO_GL=egl .venv/bin/python benchmarks/sim_render.py [--size 128] [--frames 200]

Prints one row per task and setting: ms per rendered frame (update_scene + render + read back), and the
ms of one env step without rendering, for comparison. "fast" = shadows, reflections, skybox and
multisampling off (what openvla.sim uses by default for Meta-World).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from openvla.sim.render import FAST_RENDER_NOTE, ensure_headless_gl, make_renderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--tasks", default="reach-v3,pick-place-v3,door-open-v3")
    args = parser.parse_args()
    backend = ensure_headless_gl()
    from openvla.sim.metaworld import MetaWorldEnv

    print(f"MUJOCO_GL={backend}, {args.size}x{args.size}, {args.frames} frames; fast = {FAST_RENDER_NOTE}")
    print(f"{'task':<18} {'default ms':>10} {'fast ms':>8} {'speed-up':>8} {'step ms (no render)':>20}")
    for task in args.tasks.split(","):
        env = MetaWorldEnv(task, image_size=args.size, fast_render=False)  # keeps the model's defaults
        env.reset(seed=1)
        sim = env._env
        times = {}
        for fast in (False, True):
            # default first: the fast renderer turns multisampling off in the model for good
            renderer = make_renderer(sim.model, args.size, args.size, fast=fast)
            renderer.update_scene(sim.data, camera=env.camera)
            renderer.render()  # warm up
            start = time.perf_counter()
            for _ in range(args.frames):
                renderer.update_scene(sim.data, camera=env.camera)
                renderer.render()
            times[fast] = (time.perf_counter() - start) / args.frames * 1000
            renderer.close()
        start = time.perf_counter()
        for _ in range(args.frames):
            sim.step(np.zeros(4, np.float32))
        step_ms = (time.perf_counter() - start) / args.frames * 1000
        env.close()
        print(f"{task:<18} {times[False]:>10.1f} {times[True]:>8.1f} {times[False] / times[True]:>7.1f}x "
              f"{step_ms:>20.2f}")


if __name__ == "__main__":
    main()
