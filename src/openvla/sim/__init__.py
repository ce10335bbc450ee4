"""Simulation: Meta-World and LIBERO adapters, scripted demonstrations, closed-loop evaluation and reports.

Simulators are imported only when an env is made, so importing this package stays light. Importing it
picks a headless GL backend for MuJoCo (MUJOCO_GL=egl unless already set), which must happen before
mujoco itself is imported.
"""

from openvla.sim.render import ensure_headless_gl

ensure_headless_gl()

from openvla.sim.collect import collect_metaworld  # noqa: E402
from openvla.sim.evaluate import evaluate  # noqa: E402
from openvla.sim.experts import ExpertPolicy, RandomPolicy  # noqa: E402
from openvla.sim.policies import load_policy  # noqa: E402

__all__ = ["ExpertPolicy", "RandomPolicy", "collect_metaworld", "evaluate", "load_policy"]
