"""Load a local pipeline folder by importing only its own classes.

`DiffusionPipeline.from_pretrained` finds each component's class through diffusers' and
transformers' lazy top-level modules, which import far more than the classes a pipeline
uses (docs/startup.md). For a folder whose `model_index.json` names only classes listed in
KNOWN_CLASSES (the embedded shapes model's), `load_direct` imports those modules directly
and builds the same pipeline the way `from_pretrained` does: each component's
`from_pretrained(folder/<name>, dtype)`, the pipeline class called with them, then
`register_to_config(_name_or_path=folder)`. Any other folder returns None (the caller uses
`DiffusionPipeline.from_pretrained`). tests/test_startup.py checks that both give the same
configs, weights and images.

`light=True` (the CLI's runs that do not compile, `_startup.is_light()`) goes further: the
diffusers modules are imported inside `_startup.without_dynamo()` and `without_transformers()`, and a gated-GELU T5
text encoder stored as one `model.safetensors` with a right-padding word-level tokenizer (the
embedded model's) is loaded as `shapes.text_encoder.T5Encoder` / `WordTokenizer`, which compute
the same embeddings bit for bit without importing transformers (docs/startup.md). The pipeline's
config then names those classes for `text_encoder` and `tokenizer`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

#: (library, class name) -> the module that defines it
KNOWN_CLASSES = {
    ("diffusers", "PixArtSigmaPipeline"): "diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma",
    ("diffusers", "PixArtTransformer2DModel"): "diffusers.models.transformers.pixart_transformer_2d",
    ("diffusers", "AutoencoderKL"): "diffusers.models.autoencoders.autoencoder_kl",
    ("diffusers", "DPMSolverMultistepScheduler"): "diffusers.schedulers.scheduling_dpmsolver_multistep",
    ("diffusers", "FlowMatchEulerDiscreteScheduler"): "diffusers.schedulers.scheduling_flow_match_euler_discrete",
    ("diffusers", "DDIMScheduler"): "diffusers.schedulers.scheduling_ddim",
    ("transformers", "T5EncoderModel"): "transformers.models.t5.modeling_t5",
    ("transformers", "PreTrainedTokenizerFast"): "transformers.tokenization_utils_tokenizers",
}


def _class(library: str, name: str) -> Any:
    return getattr(importlib.import_module(KNOWN_CLASSES[(library, name)]), name)


def components(folder: Path) -> dict[str, tuple[str, str]] | None:
    """model_index.json's components as {name: (library, class)}, None unless every class
    (the pipeline's too) is in KNOWN_CLASSES."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parts = {k: tuple(v) for k, v in index.items()
             if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None}
    if ("diffusers", index.get("_class_name")) not in KNOWN_CLASSES or any(
            p not in KNOWN_CLASSES for p in parts.values()):
        return None
    return parts


def _light_class(folder: Path, library: str, name: str) -> Any | None:
    """shapes.text_encoder's stand-in for transformers' class `name` stored in `folder`, or None
    where it does not compute the same (another architecture, sharded weights, left padding)."""
    if library != "transformers":
        return None
    from ..shapes.text_encoder import T5Encoder, WordTokenizer

    try:
        if name == "T5EncoderModel" and (folder / "model.safetensors").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            return T5Encoder if T5Encoder.supports(config) and not config.get("is_encoder_decoder") else None
        if name == "PreTrainedTokenizerFast" and (folder / "tokenizer.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            right = config.get("padding_side", "right") == config.get("truncation_side", "right") == "right"
            return WordTokenizer if right and "model_max_length" in config and "pad_token" in config else None
    except (OSError, ValueError):
        return None
    return None


def load_direct(folder: str | Path, dtype_kwarg: str = "dtype", dtype: Any = None, light: bool = False) -> Any | None:
    """The pipeline in `folder` built from directly imported classes, or None if its
    model_index.json names a class outside KNOWN_CLASSES. `dtype_kwarg` is the name
    diffusers' models take the dtype by (`torch_dtype` before diffusers 0.36); `light`: see
    the module doc."""
    import torch

    folder = Path(folder)
    parts = components(folder)
    if parts is None:
        return None
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    light_classes = {name: _light_class(folder / name, *part) for name, part in parts.items()} if light else {}
    if light:
        from .._startup import without_dynamo, without_transformers

        try:
            with without_dynamo(), without_transformers():
                for library, cls_name in [("diffusers", index["_class_name"]), *parts.values()]:
                    if library == "diffusers":
                        _class(library, cls_name)
        except Exception:  # noqa: BLE001 - a name the stand-ins lack: the classes import below as usual
            pass
    loaded = {}
    for name, (library, cls_name) in parts.items():
        light_cls = light_classes.get(name)
        if light_cls is not None:
            loaded[name] = light_cls.from_pretrained(folder / name, dtype=dtype)
            continue
        cls = _class(library, cls_name)
        kwargs: dict[str, Any] = {}
        if issubclass(cls, torch.nn.Module):  # as diffusers' load_sub_model passes them
            kwargs = {("dtype" if library == "transformers" else dtype_kwarg): dtype, "low_cpu_mem_usage": True}
        sub = folder / name
        loaded[name] = cls.from_pretrained(str(sub if sub.is_dir() else folder), **kwargs)
    if light:  # register_modules asks peft whether a component is a PeftModel (a lazy class answers)
        with without_transformers():
            pipe = _class("diffusers", index["_class_name"])(**loaded)
    else:
        pipe = _class("diffusers", index["_class_name"])(**loaded)
    pipe.register_to_config(_name_or_path=str(folder))
    return pipe
