"""The Python API that ``import edgeseg`` exposes (docs/api.md): plain functions over the same library code the
CLI calls. Each module imports its heavy dependencies inside its functions, so ``load_bundle`` and the
``Predictor`` work on the runtime-only install (no torch)."""
