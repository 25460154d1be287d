"""Internals of `medbatch.runners.transformers.TransformersRunner`, one concern a module.

- `loading`: load the processor and the model; the facts derived from them (`Loaded`).
- `inputs`: one request → tensors (`Prepared`); several → one padded batch (`collate`).
- `constraints`: a `LabelConstraint` as token rules for `generate` (`ConstraintProgram`).
- `decoding`: one batch → generated tokens, label scores and `InferenceResponse`s.

Not public API: names here may change without notice. These modules must not import
`medbatch.runners.transformers` (the runner imports them), nor torch or transformers at
module import (they are imported inside the functions that need them, so `import medbatch`
stays light).
"""
