"""A supernet: the largest student of a family, whose weights every smaller student of the family shares.

A subnet is a StudentSpec of the same family with, per stage, at most the largest's depth (its first
blocks), width (the leading channels of every layer), kernel (the centre of the largest's kernel) and,
for inverted blocks, expansion (the leading hidden channels), as in Once-for-All and BigNAS. The
residual and inverted builders name their modules by stage and block (stages.<i>.<j>...), so a
subnet's tensors are the largest's of the same name, sliced to the subnet's shapes: `subnet_tensors`
gives them as views (gradients reach the shared weights through torch.func.functional_call) and
`extract` as a standalone student that builds, exports and retrains like any other. The plain family
numbers its layers in one sequence, so depths cannot share it: it has no supernet.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import torch
from torch import nn

from ...errors import KDSearchError
from .registry import build
from .spec import StudentSpec


ONESHOT_FAMILIES = ("residual", "inverted")


@dataclass(frozen=True)
class SubnetSpace:
    """The subnets of one family: per stage, a width among `widths[i]`, a depth among `depths`, a kernel
    among `kernels` and (inverted) an expansion among `expands`; the largest subnet takes the maximum of
    each, and its weights are the supernet's. Shape, normalization and head come from `base`."""

    base: StudentSpec  # family, in/out shape, normalization (its channels: the stage count)
    widths: tuple[tuple[int, ...], ...]  # per stage, the widths to choose from
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5)
    expands: tuple[int, ...] = (3, 4, 6)
    fc: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.base.family not in ONESHOT_FAMILIES:
            raise KDSearchError(f"the {self.base.family} family has no supernet (one-shot families: "
                                f"{', '.join(ONESHOT_FAMILIES)})")
        if len(self.widths) != len(self.base.channels) or not all(self.widths):
            raise KDSearchError("a subnet space needs a non-empty list of widths for each stage")

    @property
    def stages(self) -> int:
        return len(self.widths)

    def spec(self, widths: list[int], depths: list[int], kernels: list[int], expands: list[int] | None = None) -> StudentSpec:
        b = self.base
        inverted = b.family == "inverted"
        return StudentSpec(in_channels=b.in_channels, num_classes=b.num_classes, image_size=b.image_size,
                           channels=list(widths), convs_per_stage=max(depths), kernel_size=max(kernels),
                           batch_norm=True, fc=list(self.fc), dropout=0.0, mean=list(b.mean), std=list(b.std),
                           family=b.family, expand_ratio=max(expands) if inverted and expands else 1,
                           depths=list(depths), kernel_sizes=list(kernels),
                           expand_ratios=list(expands) if inverted else None)

    def largest(self) -> StudentSpec:
        n = self.stages
        return self.spec([max(w) for w in self.widths], [max(self.depths)] * n, [max(self.kernels)] * n,
                         [max(self.expands)] * n)

    def smallest(self) -> StudentSpec:
        n = self.stages
        return self.spec([min(w) for w in self.widths], [min(self.depths)] * n, [min(self.kernels)] * n,
                         [min(self.expands)] * n)

    def sample(self, rng: random.Random) -> StudentSpec:
        n = self.stages
        return self.spec([rng.choice(w) for w in self.widths], [rng.choice(self.depths) for _ in range(n)],
                         [rng.choice(self.kernels) for _ in range(n)], [rng.choice(self.expands) for _ in range(n)])

    def contains(self, spec: StudentSpec) -> bool:
        inverted = self.base.family == "inverted"
        return (spec.family == self.base.family and len(spec.channels) == self.stages and list(spec.fc) == list(self.fc)
                and all(w in ws for w, ws in zip(spec.channels, self.widths))
                and all(spec.stage_depth(i) in self.depths and spec.stage_kernel(i) in self.kernels
                        and (not inverted or spec.stage_expand(i) in self.expands) for i in range(self.stages)))


def slice_like(big: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The part of `big` a subnet's tensor of `shape` takes: the leading entries along every dimension,
    and the centre of a convolution kernel's two spatial dimensions (a 3x3 kernel inside a 5x5 one)."""
    index = []
    for dim, (have, want) in enumerate(zip(big.shape, shape)):
        start = (have - want) // 2 if big.dim() == 4 and dim >= 2 else 0
        index.append(slice(start, start + want))
    return big[tuple(index)]


def subnet_tensors(supernet: nn.Module, template: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `template` (a subnet built with build(spec)) as a view into the
    supernet's tensor of the same name: what torch.func.functional_call needs to run the subnet on the
    shared weights (gradients and batch-norm statistics flow into the supernet)."""
    big = dict(itertools.chain(supernet.named_parameters(), supernet.named_buffers()))
    out = {}
    for name, tensor in itertools.chain(template.named_parameters(), template.named_buffers()):
        have = big.get(name)
        if have is None or have.dim() != tensor.dim() or any(w > h for w, h in zip(tensor.shape, have.shape)):
            raise KDSearchError(f"not a subnet of this supernet: {name} {tuple(tensor.shape)} has no counterpart "
                                f"({tuple(have.shape) if have is not None else 'none'})")
        out[name] = slice_like(have, tensor.shape) if tensor.dim() else have
    return out


class Subnets:
    """The subnets' module structures, built once per spec (on the meta device: no memory for weights),
    for running them on the supernet's tensors."""

    def __init__(self, supernet: nn.Module, limit: int = 256):
        self.supernet, self.limit = supernet, limit
        self._templates: dict[str, nn.Module] = {}

    def template(self, spec: StudentSpec) -> nn.Module:
        key = spec.to_json()
        if key not in self._templates:
            if len(self._templates) >= self.limit:
                self._templates.pop(next(iter(self._templates)))
            with torch.device("meta"):
                self._templates[key] = build(spec)
        return self._templates[key]

    def forward(self, spec: StudentSpec, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        """The subnet's logits for x, computed on the supernet's tensors."""
        template = self.template(spec)
        template.train(train)
        return torch.func.functional_call(template, subnet_tensors(self.supernet, template), (x,))


def extract(supernet: nn.Module, spec: StudentSpec) -> nn.Module:
    """The subnet as a standalone student (build(spec)) holding copies of its share of the supernet's weights
    and batch-norm statistics."""
    student = build(spec).to(next(supernet.parameters()).device)
    student.load_state_dict({k: v.detach().clone() for k, v in subnet_tensors(supernet, student).items()})
    return student
