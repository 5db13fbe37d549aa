"""Export of a chosen student: spec, weights and a verified ONNX file (export.folder), with --int8 its int8 model."""
