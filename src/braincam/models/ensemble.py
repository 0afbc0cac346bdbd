"""The deep-ensemble model: several trained networks scored as one.

:class:`MeanProbability` returns ``y = log(1/K sum_k softmax(f_k(x)))``, so ``softmax(y)`` is
the members' mean probability ("deep ensembles", Lakshminarayanan et al. 2017). The run
directory of an ensemble is written by :func:`braincam.evaluate.ensemble.make_ensemble`.
Explanations and audits need one model (:func:`require_single_model`): they run on a member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from braincam.errors import BraincamError


class MeanProbability(nn.Module):
    """Logits whose softmax is the members' mean probability (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(x).float().log_softmax(dim=1) for m in self.members])
        return log_probs.logsumexp(dim=0) - math.log(len(self.members))


def is_ensemble(meta: dict[str, Any]) -> bool:
    return "members" in meta


def require_single_model(meta: dict[str, Any], run: Path | str) -> None:
    """Stop clearly where one model is needed (explanations, audits) and ``run`` is an
    ensemble: name a member to use instead."""
    if is_ensemble(meta):
        first = meta["members"][0].get("run", "a member run")
        raise BraincamError(
            f"{run} is an ensemble of {len(meta['members'])} runs; explanations and audits "
            f"need one model: run them on a member (e.g. {first})"
        )
