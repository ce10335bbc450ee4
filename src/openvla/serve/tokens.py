"""The instruction cap in tokens: characters say little (2000 emoji are 8000 tokens, 4x a 7B's context)."""

from __future__ import annotations

import copy
import threading
from typing import Any

from openvla.model.processor import build_prompt
from openvla.serve.protocol import ProtocolError


class TokenCap:
    """Counts an instruction's prompt tokens and refuses (422) more than the model's context leaves for it.

    It tokenizes on its own copy of the tokenizer: the batcher's worker uses the model's at the same time, and a
    fast tokenizer shared across threads can fail ("Already borrowed")."""

    def __init__(self, tokenizer: Any, config: Any) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.tokenizer.model_max_length = 10**9  # it only counts: no "longer than the model" warning per request
        self.lock = threading.Lock()
        self.template = self._prompt_tokens("")
        context = int(config.llm.get("max_position_embeddings") or 0)
        # the context minus image patches (and proprio/timestep tokens), the prompt template, the empty token
        # before the actions, and the action slots
        self.limit = context - config.num_prefix_tokens - self.template - 1 - config.action_slots

    def _prompt_tokens(self, instruction: str) -> int:
        with self.lock:
            return len(self.tokenizer(build_prompt(instruction), add_special_tokens=True)["input_ids"])

    def count(self, instruction: str) -> int:
        """Tokens the instruction adds to the prompt."""
        return self._prompt_tokens(instruction) - self.template

    def check(self, instruction: str) -> None:
        """ProtocolError(422) when the instruction does not fit the model's context."""
        n = self.count(instruction)
        if n > self.limit:
            raise ProtocolError(422, f"'instruction' is {n} tokens; this model takes at most {self.limit} (its "
                                     "context minus the image, prompt and action tokens)")
