"""Export of a chosen student: spec, weights and a verified ONNX file (export.folder), with --int8 its int8 model.

`kdsearch.export.load_student(folder)` rebuilds an exported (or any saved) student; the API's export
function is `kdsearch.api.export`.
"""

from ..models.students.io import load_student  # noqa: F401  (kdsearch.export.load_student, as documented before)
