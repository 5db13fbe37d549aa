"""StudentSpec: what a student is (its family, stages, widths, head, normalization), as JSON.

Specs are saved beside every student's weights (spec.json, and in the safetensors metadata) and in
the study's trial attributes; a spec saved before a field existed loads with the field's default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ...errors import KDSearchError


PER_STAGE = ("depths", "kernel_sizes", "expand_ratios")  # optional per-stage lists (None: one value for all)


@dataclass
class StudentSpec:
    in_channels: int
    num_classes: int
    image_size: int
    channels: list[int]  # per stage
    convs_per_stage: int = 1  # convs (plain) or blocks (residual, inverted) per stage
    kernel_size: int = 3  # of the stage convs (the depthwise conv for inverted)
    batch_norm: bool = True  # plain only: residual and inverted always use batch norm
    fc: list[int] = field(default_factory=list)  # hidden FC widths
    dropout: float = 0.0
    mean: list[float] = field(default_factory=list)  # input normalization (per channel)
    std: list[float] = field(default_factory=list)
    family: str = "plain"  # a key of FAMILIES (absent from specs saved before families: plain)
    expand_ratio: int = 1  # inverted only: hidden width = input width * expand_ratio
    # per stage, instead of the one value above for every stage (a one-shot supernet's subnets vary them
    # stage by stage); None: the single value. Left out of the JSON when None, so specs saved before
    # they existed read and serialize as they were.
    depths: list[int] | None = None  # convs (plain) or blocks per stage, instead of convs_per_stage
    kernel_sizes: list[int] | None = None  # instead of kernel_size
    expand_ratios: list[int] | None = None  # inverted only: instead of expand_ratio

    def __post_init__(self) -> None:
        for name in PER_STAGE:
            value = getattr(self, name)
            if value is not None and len(value) != len(self.channels):
                raise KDSearchError(f"invalid student spec: {name} has {len(value)} values for "
                                    f"{len(self.channels)} stages")

    def stage_depth(self, i: int) -> int:
        return self.depths[i] if self.depths is not None else self.convs_per_stage

    def stage_kernel(self, i: int) -> int:
        return self.kernel_sizes[i] if self.kernel_sizes is not None else self.kernel_size

    def stage_expand(self, i: int) -> int:
        return self.expand_ratios[i] if self.expand_ratios is not None else self.expand_ratio

    def to_json(self) -> str:
        out = {k: v for k, v in asdict(self).items() if not (k in PER_STAGE and v is None)}
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudentSpec:
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise KDSearchError(f"invalid student spec: {exc}") from None

    def summary(self) -> str:
        """One line, e.g. 'conv[16,32]x2 k3 bn | fc[64] drop0.10', 'res[16,32]x2 k3 | fc[]',
        'inv[16,24]x2 e4 k3 | fc[]'."""
        tag = {"plain": "conv", "residual": "res", "inverted": "inv"}.get(self.family, self.family)

        def values(per_stage: list[int] | None, one: int) -> str:  # 'x2', or per stage 'x[1,2,2]'
            return f"[{','.join(map(str, per_stage))}]" if per_stage is not None else str(one)

        body = f"{tag}[{','.join(map(str, self.channels))}]x{values(self.depths, self.convs_per_stage)}"
        body += f" e{values(self.expand_ratios, self.expand_ratio)}" if self.family == "inverted" else ""
        body += f" k{values(self.kernel_sizes, self.kernel_size)}"
        body += " bn" if self.family == "plain" and self.batch_norm else ""
        fc = f"fc[{','.join(map(str, self.fc))}]" if self.fc else "fc[]"
        return f"{body} | {fc}" + (f" drop{self.dropout:.2f}" if self.dropout > 0 and self.fc else "")
