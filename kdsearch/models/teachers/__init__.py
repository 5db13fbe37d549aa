"""Teachers: a registry of architectures, one source of bodies per kind of name, and the wrapper.

`create_teacher(name, ...)` (models.teachers.build) works like timm's `create_model`: a name picks
a source (a registered architecture, `timm:NAME` or `package.module:factory`); the result is a
plain `nn.Module` (`TeacherNet`) that takes float images in [0, 1] at the dataset's native size and
returns logits. Fine-tuning, scoring and caching a teacher for a study is training.teacher's job.
"""
