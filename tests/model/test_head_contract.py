"""The contract every registered action head must meet (docs/contributing.md): it fits a batch, its training pass
agrees with inference on the same inputs, it saves and reloads, and it trains in every mode with the right
modules frozen. A new head is covered by adding it to HEADS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.model.heads import HEADS
from openvla.model.vla import ModelInputs
from openvla.train.batching import Collator, sample_builder
from openvla.train.modes import MODES, apply_mode

TASKS = ["open the drawer", "push the button"]
FIT_STEPS = {"tokens": 40, "l1": 40, "diffusion": 60, "flow": 60, "fast": 40}


def _model(head: str) -> VLA:
    cfg = get_preset("tiny")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_head, cfg.action_dim, cfg.action_chunk = head, 3, 2
    cfg.parallel_decoding = HEADS[head].needs_parallel
    if head == "diffusion":
        cfg.diffusion_steps = 4
    torch.manual_seed(0)
    return VLA.create(cfg, TASKS, seed=0)


def _batch(vla: VLA, actions: np.ndarray | None = None, n: int = 4) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
    if actions is None:
        actions = rng.uniform(-0.9, 0.9, (n, vla.config.action_chunk, vla.config.action_dim))
    frames = [{"images": {"image": images[i]}, "actions": np.asarray(actions[i], np.float32),
               "instruction": TASKS[i % 2], "seed": i} for i in range(n)]
    build = sample_builder(vla.processor)
    return Collator(vla.llm.pad_token_id)([build(f) for f in frames])


def _inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "labels", "actions", "action_mask")}


def _packed(vla: VLA, batch: dict) -> ModelInputs:
    """The inference inputs of the batch's rows: the prompts alone, packed as predict_action packs them."""
    prompts = [row[: list(lab).index(next(x for x in lab if x > vla.action_tokenizer.begin_idx))].tolist()
               for row, lab in zip(batch["input_ids"], batch["labels"].tolist(), strict=True)]
    ids, mask = vla.pack_prompts(prompts)
    return ModelInputs(ids, batch["pixel_values"], mask)


def _fit(vla: VLA, inputs: dict, steps: int) -> list[float]:
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    torch.manual_seed(1)
    losses = []
    for _ in range(steps):
        loss = vla(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_fits_a_batch(head):
    vla = _model(head)
    inputs = _inputs(_batch(vla))
    first = vla(**inputs)
    assert first.metrics, "a head reports at least one metric"
    losses = _fit(vla, inputs, FIT_STEPS[head])
    assert np.mean(losses[-5:]) < 0.7 * first.loss.item()


@pytest.mark.parametrize("head", sorted(HEADS))
def test_training_pass_equals_inference_on_the_same_inputs(head):
    vla = _model(head)
    # A fitted token model emits action ids, which re-encode exactly; FAST's only when they decode inside [-1, 1]
    _fit(vla, _inputs(_batch(vla)), 40 if head == "fast" else 20)
    vla.eval()
    batch = _batch(vla)
    packed = _packed(vla, batch)
    with torch.no_grad():
        if vla.config.parallel_decoding:  # the states that feed the head, slots filled the same way
            slots = torch.randn(batch["input_ids"].shape[0], vla.config.action_slots, vla.config.llm_dim)
            extend = None
            if head == "diffusion":
                t = torch.full((slots.shape[0],), 2)
                extend = lambda p: vla.action_head.timestep_token(p, t)  # noqa: E731
            inputs = ModelInputs(**_inputs(batch))
            train = vla.slot_states_train(inputs, slot_inputs=slots, extend_prefix=extend)
            infer = vla.parallel_runner(packed, vla.config.action_slots)(slots, extend)
            torch.testing.assert_close(train, infer, atol=2e-5, rtol=0)
        actions = vla.sample_actions(packed)
        assert actions.shape == (4, vla.config.action_chunk, vla.config.action_dim)
        np.testing.assert_array_equal(actions, vla.sample_actions(packed))  # deterministic
        out = vla(**_inputs(_batch(vla, actions)))
    if out.predicted_actions is not None:  # teacher-forced on its own outputs, the head predicts them again
        np.testing.assert_allclose(out.predicted_actions.clamp(-1, 1).numpy(), actions, atol=2e-5)  # inference clamps
    else:  # denoising heads draw noise and times in training: no single pass reproduces their sampler
        assert head in ("diffusion", "flow")


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_saves_and_reloads(head, tmp_path):
    vla = _model(head).eval()
    packed = _packed(vla, _batch(vla))
    vla.save_pretrained(tmp_path)
    again = VLA.from_pretrained(tmp_path)
    assert type(again.action_head) is type(vla.action_head)
    np.testing.assert_array_equal(again.sample_actions(packed), vla.sample_actions(packed))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_trains_in_every_mode_with_the_right_modules_frozen(head, mode):
    vla = _model(head)
    model = apply_mode(vla, mode)
    names = {n.replace("base_model.model.", ""): p for n, p in model.named_parameters()}
    head_params = {n: p for n, p in names.items() if n.startswith("action_head.")}
    assert all(p.requires_grad for p in head_params.values()), "the head's own modules train in every mode"
    unused = tuple(vla.unused_prefixes())
    assert not any(p.requires_grad for n, p in names.items() if n.startswith(unused))
    assert not any("lora_" in n for n in head_params), "new modules are never LoRA-wrapped"
    before = {n: p.detach().clone() for n, p in names.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-2)
    loss = model(**_inputs(_batch(vla))).loss
    loss.backward()
    opt.step()
    changed = {n for n, p in names.items() if not torch.equal(p, before[n])}
    frozen = {n for n, p in names.items() if not p.requires_grad}
    assert not changed & frozen
    assert changed, f"{mode}: nothing trained"
    if head_params:
        assert changed & set(head_params), f"{mode}: the head did not train"


@pytest.mark.parametrize("head", sorted(HEADS))
def test_chunk_steps_past_the_episode_never_count_in_the_loss(head):
    vla = _model(head)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-0.9, 0.9, (4, 2, 3))
    other = actions.copy()
    other[:, 1] = rng.uniform(-0.9, 0.9, (4, 3))  # the second step differs...
    a, b = _inputs(_batch(vla, actions)), _inputs(_batch(vla, other))
    for inputs in (a, b):
        inputs["action_mask"][:, 1] = False  # ...and lies past the episode's end
    losses = []
    for inputs in (a, b, {**a, "action_mask": None}):
        torch.manual_seed(0)
        losses.append(vla(**inputs).loss.item())
    if head != "diffusion":  # the diffusion head's slots hold the noisy actions, so padded steps are inputs there
        assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert losses[2] != pytest.approx(losses[0], abs=1e-6)  # without the mask the padded step counts
