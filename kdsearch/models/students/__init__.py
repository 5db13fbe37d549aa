"""Student CNNs: a StudentSpec (JSON round-trip), a registry of families, sampling, build(spec), save and load.

A student belongs to a family, and each family has one builder (registered with
@register_family, as timm registers models): plain (VGG-style), residual (ResNet-8/14-style) and
inverted (MobileNetV2-style), one module each. In every family the spec's channels are the
per-stage widths, convs_per_stage the convs (plain) or blocks (residual, inverted) per stage and
kernel_size the kernel of those convs (the depthwise kernel for inverted). Residual and inverted
stages after the first start with a stride-2 block. Batch norm is a searched choice only for
plain: residual and inverted students always use it (their shortcuts and depthwise convs train
poorly without), so batch_norm is True in their specs and is not sampled for them.

Every family ends in global average pooling and the same head: fully connected layers (ReLU,
optional dropout) and a linear classifier. Input normalization lives inside the model, so a
student, and its ONNX export, takes raw pixels in [0, 1] and returns logits.

Importing this package registers the built-in families. What a user imports from it:

    from kdsearch.models.students import StudentSpec, build, reference_spec
    model = build(StudentSpec(in_channels=3, num_classes=10, image_size=32, channels=[16, 32, 64]))
"""

from . import plain, residual, inverted  # noqa: F401, I001  (registers the built-in families, in this order)
from .references import REFERENCES, reference_spec, scaled_reference
from .registry import build
from .spec import StudentSpec

__all__ = ["StudentSpec", "build", "REFERENCES", "reference_spec", "scaled_reference"]
