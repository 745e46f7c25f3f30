"""The dtype a draft runs in under SGLang, and the one it must be exported in.

SGLang builds the draft with the server's one ``--dtype``. Under ``auto`` (its default) each model's
config decides, with vLLM's rule: ``float32``, or no dtype at all, runs as ``float16``. NeMo
Automodel saves its drafts with ``dtype: float32`` (float32 weights, bfloat16 norms), so beside a
bfloat16 target the draft would run in float16 and receive bfloat16 hidden states: a dtype clash in
the draft's ``fc``. The export therefore states the dtype the target runs in, and its weights are
stored in it (SGLang casts them to that dtype at load anyway, so nothing is lost; the file halves).
"""

from __future__ import annotations

from automodel_spec.io.torch_import import import_torch

_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
          "float32": "float32", "fp32": "float32", "float": "float32"}
FALLBACK = "bfloat16"  # what Llama-family targets ship in, for when the target is not on disk


def _named(config: dict):
    """``(key, value)`` of the dtype a config names: ``torch_dtype``, else transformers 5's ``dtype``."""
    key = "torch_dtype" if config.get("torch_dtype") is not None else "dtype"
    return key, config.get(key)


def config_dtype(config: dict) -> str | None:
    """The dtype a config names (``torch_dtype`` or transformers 5's ``dtype``), normalized.

    Raises:
        ValueError: it names a dtype that is not one of ``_NAMES`` (see ``unknown_dtype``).
    """
    key, value = _named(config)
    if value is None:
        return None
    name = _NAMES.get(str(value).removeprefix("torch."))
    if name is None:  # never a silent float16: SGLang would cast to whatever it guessed
        raise ValueError(unknown_dtype(config))
    return name


def unknown_dtype(config: dict) -> str | None:
    """``"torch_dtype='X', ..."`` when the config names a dtype this project does not know, else ``None``."""
    key, value = _named(config)
    if value is None or _NAMES.get(str(value).removeprefix("torch.")) is not None:
        return None
    return (f"{key}={value!r}, which is not a dtype SGLang serves a model in: known are "
            f"{', '.join(sorted(set(_NAMES.values())))} (also written {', '.join(sorted(set(_NAMES) - set(_NAMES.values())))})")


def auto_dtype(config: dict) -> str:
    """What SGLang's ``--dtype auto`` runs a (non-Gemma) model with this config in."""
    named = config_dtype(config)
    return "float16" if named in (None, "float32") else named


def choose_serving_dtype(server_dtype: str | None, target_config: dict | None) -> tuple[str, str]:
    """The dtype the target runs in, which the draft must match; and where that came from.

    Args:
        server_dtype: ``sglang.dtype`` (``None`` or ``auto``: SGLang decides from each config).
        target_config: the target's config when it is on disk.
    """
    if server_dtype not in (None, "auto"):
        named = _NAMES.get(server_dtype)
        if named is None:
            from automodel_spec.errors import ConfigError

            raise ConfigError(f"sglang.dtype={server_dtype} is not a dtype this project knows; use auto, "
                              "bfloat16, float16 or float32.")
        return named, f"sglang.dtype={server_dtype}"
    if target_config is not None:
        return auto_dtype(target_config), "the target's config.json under --dtype auto"
    return FALLBACK, "no local target config: assumed a bfloat16 target (give target.path or sglang.dtype)"


def set_serving_dtype(cfg: dict, tensors: dict, dtype: str, source: str, notes: list[str]) -> dict:
    """``cfg`` names ``dtype`` in both keys; floating tensors are cast to it. Returns the tensors."""
    torch = import_torch()

    before = auto_dtype(cfg)
    if before != dtype or config_dtype(cfg) != dtype:
        notes.append(f"dtype {config_dtype(cfg)} -> {dtype} ({source}); under --dtype auto SGLang would run the "
                     f"draft in {before}" + (" beside a target in " + dtype if before != dtype else ""))
    cfg["torch_dtype"] = dtype
    if "dtype" in cfg:
        cfg["dtype"] = dtype
    want = getattr(torch, dtype)
    cast = {n: t.to(want) if t.is_floating_point() and t.dtype != want else t for n, t in tensors.items()}
    changed = sorted({str(t.dtype).removeprefix("torch.") for n, t in tensors.items() if cast[n] is not t})
    if changed:
        notes.append(f"weights stored as {dtype} (were {', '.join(changed)}); SGLang casts them to {dtype} at load")
    return cast
