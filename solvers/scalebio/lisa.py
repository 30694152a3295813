"""LISA: layerwise importance-sampled training of u and w (ALGORITHMS.md §3).
 Every ``period`` steps each model freezes all its transformer blocks and unfreezes ``n_active`` of them,
drawn uniformly without replacement; u and w draw independently. Embeddings, the final norm and the LM head
are outside the block list and so always train. A frozen parameter has ``requires_grad=False``, gets no
gradient, and AdamW skips it entirely (no update, no weight decay), but AdamW would keep its moments: with
``release_state`` (the default) they are dropped when the block is frozen, so optimizer memory stays bounded by the
active blocks plus the always-trained parameters. The draws come from one seeded generator whose state is part of
the checkpoint, so a resumed run draws the same blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from solvers.lm import find_blocks


class Lisa:
    """Block sampler for a fixed list of models (for ScaleBiO: ``[u, w]``)."""

    def __init__(self, models: Sequence[nn.Module], n_active: int, period: int, seed: int,
                 release_state: bool = True) -> None:
        self.blocks = [find_blocks(m) for m in models]
        for blocks in self.blocks:
            if n_active > len(blocks):
                raise ValueError(
                    f"ScaleBiOConfig.lisa_layers={n_active} exceeds the model's {len(blocks)} blocks")
        self.n_active, self.period, self.release_state = n_active, period, release_state
        self.generator = torch.Generator().manual_seed(seed)
        self.active: list[list[int]] = [list(range(len(b))) for b in self.blocks]

    def due(self, step: int) -> bool:
        """Whether ``step`` draws new blocks (a multiple of the period)."""
        return step % self.period == 0

    def maybe_redraw(self, step: int, optimizers: Sequence[torch.optim.Optimizer] = ()) -> bool:
        """Redraw the active blocks if ``step`` is a multiple of the period; returns whether it did.

        With ``release_state``, the AdamW moments of every block that is frozen now are dropped from the
        matching optimizer (``optimizers`` aligned with the models, one per model).

        Raises:
            ValueError: ``release_state`` is set and ``optimizers`` does not hold one optimizer per model (the
                state would silently stay, and with it the memory LISA is meant to save).
        """
        if self.release_state and len(optimizers) != len(self.blocks):
            raise ValueError(f"Lisa(release_state=True) needs one optimizer per model ({len(self.blocks)}), "
                             f"got {len(optimizers)}")
        if not self.due(step):
            return False
        self.redraw()
        if self.release_state:
            for frozen, opt in zip(self.frozen_params(), optimizers, strict=True):
                for param in frozen:
                    opt.state.pop(param, None)
        return True

    def redraw(self) -> None:
        """Draw each model's active blocks anew and apply the freezing."""
        self.active = [sorted(torch.randperm(len(b), generator=self.generator, device="cpu")[: self.n_active].tolist())
                       for b in self.blocks]
        self.apply()

    def frozen_params(self) -> list[list[nn.Parameter]]:
        """Per model, the parameters of its blocks that are frozen in the current draw."""
        return [[p for i, block in enumerate(blocks) if i not in active for p in block.parameters()]
                for blocks, active in zip(self.blocks, self.active, strict=True)]

    def apply(self) -> None:
        """Set ``requires_grad`` on every block from the current draw."""
        for blocks, active in zip(self.blocks, self.active, strict=True):
            for i, block in enumerate(blocks):
                block.requires_grad_(i in active)

    def state_dict(self) -> dict[str, Any]:
        """Generator state and current draw."""
        return {"generator": self.generator.get_state(), "active": [list(a) for a in self.active]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and re-apply the freezing it describes."""
        self.generator.set_state(state["generator"])
        self.active = [list(a) for a in state["active"]]
        self.apply()
