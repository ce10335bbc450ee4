"""`openvla collect metaworld --tasks` and `openvla eval --tasks` take space- and comma-separated lists."""

from __future__ import annotations

import json
import sys

import pytest

import openvla.sim.collect  # noqa: F401  (monkeypatched below)
import openvla.sim.evaluate  # noqa: F401
from openvla.cli import main
from openvla.sim.metaworld import resolve_tasks


@pytest.mark.parametrize("tasks", [["reach", "push-v3"], ["reach,push-v3"], ["reach,", "push-v3"]])
def test_collect_tasks_space_or_comma_separated(tmp_path, monkeypatch, tasks):
    seen = {}

    def fake_collect(tasks, out, **kw):
        seen["tasks"] = tasks
        (tmp_path / "collect_info.json").write_text(json.dumps({"per_task": {}, "collect_s_this_run": 0.0}))
        return out

    monkeypatch.setattr(sys.modules["openvla.sim.collect"], "collect_metaworld", fake_collect)
    assert main(["collect", "metaworld", "--tasks", *tasks, "--out", str(tmp_path)]) == 0
    assert resolve_tasks(seen["tasks"]) == ["reach-v3", "push-v3"]


def test_eval_tasks_space_separated(tmp_path, monkeypatch):
    seen = {}

    def fake_evaluate(policy, env, tasks, **kw):
        seen["tasks"] = tasks
        raise RuntimeError("stop here")

    monkeypatch.setattr(sys.modules["openvla.sim.evaluate"], "evaluate", fake_evaluate)
    main(["eval", "--policy", "expert", "--tasks", "reach", "push", "--out", str(tmp_path)])
    assert resolve_tasks(seen["tasks"]) == ["reach-v3", "push-v3"]
