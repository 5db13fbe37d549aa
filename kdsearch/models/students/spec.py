"""StudentSpec: what a student is (its family, stages, widths, head, normalization), as JSON.

Specs are saved beside every student's weights (spec.json, and in the safetensors metadata) and in
the study's trial attributes; a spec saved before a field existed loads with the field's default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ...errors import KDSearchError


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

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
        body = f"{tag}[{','.join(map(str, self.channels))}]x{self.convs_per_stage}"
        body += f" e{self.expand_ratio}" if self.family == "inverted" else ""
        body += f" k{self.kernel_size}"
        body += " bn" if self.family == "plain" and self.batch_norm else ""
        fc = f"fc[{','.join(map(str, self.fc))}]" if self.fc else "fc[]"
        return f"{body} | {fc}" + (f" drop{self.dropout:.2f}" if self.dropout > 0 and self.fc else "")
