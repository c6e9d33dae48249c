"""Worlds that tests and benchmarks share: exact analytic mixtures wrapped as a
`DenoisingProcess` (`analytic`, `gmm`), tiny random diffusers pipelines of every supported
family (`tiny_pipelines`), a tiny open_clip model on disk (`tiny_clip`), and small verifiers
whose scores are known functions of the image (`helpers`).

Importable from the installed package, so no test or script edits `sys.path`. Nothing here
is imported by `tts_diffusion` itself; the submodules import diffusers / open_clip lazily.
"""
