"""How every strokescan model is stored: fp16 weights beside a JSON plan that records their sha256.

Loading checks that both files exist, that the weights' checksum matches the plan and that the weights fit the
architecture; any failure is a :class:`~strokescan.errors.ModelError` with one line saying which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from torch import nn

from strokescan.errors import ModelError


class Plan(Protocol):
    weights_sha256: str

    def to_json(self) -> str: ...


P = TypeVar("P")
M = TypeVar("M", bound=nn.Module)


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(model: nn.Module, plan: Plan, folder: Path | str, weights_file: str, plan_file: str) -> Path:
    """Write ``model``'s weights as fp16 and ``plan`` (its ``weights_sha256`` filled in) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, folder / weights_file)
    plan.weights_sha256 = sha256_of(folder / weights_file)
    (folder / plan_file).write_text(plan.to_json())
    return folder


def read_plan(folder: Path | str, weights_file: str, plan_file: str, what: str, parse: Callable[[str], P]) -> P:
    """The plan in ``folder`` after checking that the weights beside it are the ones it names."""
    folder = Path(folder)
    weights, plan_path = folder / weights_file, folder / plan_file
    if not weights.is_file() or not plan_path.is_file():
        raise ModelError(f"{folder}: no {what} here (need {weights_file} and {plan_file})")
    plan = parse(plan_path.read_text())
    digest = sha256_of(weights)
    if digest != plan.weights_sha256:  # type: ignore[attr-defined]
        raise ModelError(f"{weights}: checksum {digest[:12]}... does not match the plan "
                         f"({plan.weights_sha256[:12]}...)")  # type: ignore[attr-defined]
    return plan


def load_weights(model: M, weights: Path | str) -> M:
    """``model`` in eval mode with the (fp16-stored) weights loaded as fp32."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError:
        raise ModelError(f"{weights}: weights do not match the architecture in the plan") from None
    return model.eval()
