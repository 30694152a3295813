"""Shared-base lower level: u and w as two LoRA adapters over one frozen copy of the model.

With ``ScaleBiOConfig.lower_level="lora"`` the solver keeps a single copy of the base weights (frozen) carrying two
peft LoRA adapters named ``u`` and ``w``. Each of u and w is an :class:`AdapterView`: a module whose forward
activates its adapter on the shared model and whose parameters (and state dict) are its adapter's alone, so the
rest of the solver (step, clipping, optimizers, checkpoints) treats it like a model copy. Both adapters start at
B = 0, i.e. u = w = base, as the two full copies do. Only adapter weights train: embeddings, norms and head stay
at the base values. LISA does not combine with it (the authors' code asserts the same). The adapters are built
by :func:`solvers.lora.with_adapters` from a :class:`~solvers.lora.LoraSpec`, the settings type LESS uses too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from solvers.lora import LoraSpec as LoraSpec  # re-exported: the settings type of this lower level
from solvers.lora import with_adapters

ADAPTERS = ("u", "w")


class AdapterView(nn.Module):
    """One adapter of a shared peft model, seen as a model of its own."""

    def __init__(self, shared: nn.Module, adapter: str) -> None:
        super().__init__()
        self._shared = [shared]  # a list, so the shared model is not registered as this module's child
        self.adapter = adapter

    @property
    def shared(self) -> nn.Module:
        """The peft model holding the base weights and both adapters."""
        return self._shared[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.shared.set_adapter(self.adapter)  # type: ignore[operator]
        return self.shared(*args, **kwargs)

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.shared.named_parameters():
            if _is_adapter_param(name, self.adapter):
                yield prefix + ("." if prefix else "") + name, param

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        for _, param in self.named_parameters():
            yield param

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {name: param.detach().clone() for name, param in self.named_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        params = dict(self.named_parameters())
        if strict and set(params) != set(state_dict):
            raise ValueError(f"adapter {self.adapter!r}: state dict keys differ from the adapter's parameters")
        with torch.no_grad():
            for name, value in state_dict.items():
                params[name].copy_(value)
        return None

    def train(self, mode: bool = True) -> AdapterView:
        self.training = mode
        self.shared.train(mode)
        return self


def _is_adapter_param(name: str, adapter: str) -> bool:
    return "lora_" in name and f".{adapter}." in name + "."


def lora_pair(model: nn.Module, spec: LoraSpec, consume: bool = False) -> tuple[AdapterView, AdapterView]:
    """u and w over one deep copy of ``model`` (``model`` itself is not modified), or over ``model`` itself
    when ``consume`` (it then gains the adapters in place, and the base is held once, not twice)."""
    shared = with_adapters(model, spec, ADAPTERS, consume=consume)
    for name, param in shared.named_parameters():
        param.requires_grad_(_is_adapter_param(name, ADAPTERS[0]) or _is_adapter_param(name, ADAPTERS[1]))
    return AdapterView(shared, ADAPTERS[0]), AdapterView(shared, ADAPTERS[1])
