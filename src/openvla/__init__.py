"""openvla: OpenVLA-exact Vision-Language-Action models, training, data, simulation and serving."""

from openvla.config import PRESETS, VLAConfig, get_preset
from openvla.model.vla import VLA
from openvla.policy import Policy

__all__ = ["VLA", "VLAConfig", "PRESETS", "get_preset", "Policy"]
__version__ = "0.1.0"
