"""Choose MuJoCo's headless GL backend before any test module imports mujoco (via metaworld)."""

import openvla.sim  # noqa: F401  (sets MUJOCO_GL=egl unless set)
