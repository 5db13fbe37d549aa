"""Saving and loading a student: spec.json beside student.safetensors (no pickle, nothing executed).

Every student kdsearch keeps (a search trial's, a final-training model's, an export) is such a
folder, written atomically, so a killed run leaves no half file.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ...errors import KDSearchError
from ...runs.files import atomic_path, write_text_atomic
from ...runs.layout import SPEC_FILE, WEIGHTS_FILE
from .registry import build
from .spec import StudentSpec


def save_student(path: Path, model: nn.Module, spec: StudentSpec) -> None:
    """Weights (safetensors, the spec in its metadata) and spec (JSON), each written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"spec": spec.to_json()})
    write_text_atomic(path / SPEC_FILE, spec.to_json() + "\n")


def load_student(folder: str | Path) -> tuple[nn.Module, StudentSpec]:
    """The student saved in `folder` (a trial folder, a final-training folder or an export), in eval mode."""
    folder = Path(folder)
    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_path.is_file() or not weights.is_file():
        raise KDSearchError(f"{folder} holds no student ({SPEC_FILE} and {WEIGHTS_FILE})")
    try:
        spec = StudentSpec.from_json(spec_path.read_text())
        model = build(spec)
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise KDSearchError(f"cannot load the student in {folder}: {str(exc).splitlines()[0]}") from None
    return model.eval(), spec
