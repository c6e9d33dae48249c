"""What plugs into the DenoisingProcess through the per-call feature protocol
(core/state.py `ModelFeature`): T-GATE's cross-attention caching (tgate.py, tgate_mmdit.py;
its settings, torch-free, in tgate_spec.py) and Alfie's attention capture
(attention_capture.py)."""
