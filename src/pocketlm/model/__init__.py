"""The model stage: the typed config and named presets, the analytic cost model, the decoder and
standard checkpoints; the `presets`, `info` and `init` verbs."""
