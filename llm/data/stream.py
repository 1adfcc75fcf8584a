"""The prompt stream of a run: a seeded permutation per epoch, its position saved in checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llm.data.loaders import render_prompt

if TYPE_CHECKING:
    from llm.config.train_config import TrainConfig


class DataStream:
    """The prompt stream: epoch e visits the examples in a permutation seeded by (seed, e).

    ``position`` (prompts drawn so far) is the only state, saved in checkpoints.
    """

    def __init__(self, examples: list, tokenizer, cfg: TrainConfig, *, position: int = 0):
        self.examples, self.tokenizer, self.cfg = examples, tokenizer, cfg
        self.position = position
        self._epoch, self._order = -1, np.arange(0)

    def __len__(self) -> int:
        return len(self.examples)

    def _index(self, pos: int) -> int:
        epoch, offset = divmod(pos, len(self.examples))
        if epoch != self._epoch:
            rng = np.random.default_rng([self.cfg.seed, epoch])
            self._epoch, self._order = epoch, rng.permutation(len(self.examples))
        return int(self._order[offset])

    def next(self, k: int) -> list[tuple[str, str]]:
        """The next ``k`` (rendered prompt, answer) pairs."""
        out = []
        for _ in range(k):
            ex = self.examples[self._index(self.position)]
            self.position += 1
            out.append((render_prompt(ex, self.tokenizer, chat_template=self.cfg.chat_template),
                        str(ex.answer)))  # fmt: skip
        return out
