"""Write the ~88M-parameter F16 llama GGUF with random weights that the batching benchmarks use.

The tokenizer (every `tokenizer.*` key) is copied from SmolLM2's GGUF, so prompts tokenize
as they would on a real model. Embeddings are tied (no `output.weight`), as in SmolLM2.
The embedding rows of control tokens (end-of-text, <|im_end|>, ...) are zero, so their logit
is always 0 while the best of 49k random logits is well above it: greedy decoding never
ends on its own and every run produces exactly `num_predict` tokens.

    .venv/bin/python -m bench.make_model [--out PATH] [--force]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType, TokenType

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
BIG = REPO / "bench" / ".build" / "models" / "big-f16.gguf"

N_EMBD = 768
N_LAYER = 8
N_HEAD = 12
N_HEAD_KV = 4
N_FF = 2048
N_CTX = 8192
WEIGHT_SCALE = 0.02


Field = tuple[str, object, GGUFValueType, GGUFValueType | None]


def _tokenizer_fields(source: Path) -> list[Field]:
    """Every tokenizer.* key of `source` as (key, value, type, element type)."""
    reader = GGUFReader(source)
    out: list[Field] = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        sub = field.types[1] if kind == GGUFValueType.ARRAY else None
        out.append((key, field.contents(), kind, sub))
    return out


def _control_ids(fields: list[Field]) -> list[int]:
    types = next(v for k, v, _, _ in fields if k == "tokenizer.ggml.token_type")
    assert isinstance(types, list)
    return [i for i, t in enumerate(types) if t == TokenType.CONTROL]


def _tensors(n_vocab: int, control: list[int], seed: int) -> dict[str, np.ndarray]:
    """Tensors by GGUF name; numpy shapes are ggml's dimensions reversed (out, in)."""
    rng = np.random.default_rng(seed)
    head = N_EMBD // N_HEAD

    def random(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * WEIGHT_SCALE).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)  # norms stay F32, as converters write them

    embd = random(n_vocab, N_EMBD)
    embd[control] = 0
    tensors = {"token_embd.weight": embd}
    for i in range(N_LAYER):
        b = f"blk.{i}"
        tensors |= {
            f"{b}.attn_norm.weight": ones(N_EMBD),
            f"{b}.attn_q.weight": random(N_HEAD * head, N_EMBD),
            f"{b}.attn_k.weight": random(N_HEAD_KV * head, N_EMBD),
            f"{b}.attn_v.weight": random(N_HEAD_KV * head, N_EMBD),
            f"{b}.attn_output.weight": random(N_EMBD, N_HEAD * head),
            f"{b}.ffn_norm.weight": ones(N_EMBD),
            f"{b}.ffn_gate.weight": random(N_FF, N_EMBD),
            f"{b}.ffn_up.weight": random(N_FF, N_EMBD),
            f"{b}.ffn_down.weight": random(N_EMBD, N_FF),
        }
    tensors["output_norm.weight"] = ones(N_EMBD)
    return tensors


def write_big_model(out: Path = BIG, source: Path = SMOLLM2, seed: int = 0) -> Path:
    """Write the model to `out` (atomically) and return its path."""
    fields = _tokenizer_fields(source)
    tokens = next(v for k, v, _, _ in fields if k == "tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    tmp = out.with_suffix(".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(tmp, "llama")
    writer.add_name("corral-bench-88m-f16")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    for key, value, kind, sub in fields:
        writer.add_key_value(key, value, kind, sub_type=sub)
    params = 0
    for name, tensor in _tensors(len(tokens), _control_ids(fields), seed).items():
        writer.add_tensor(name, tensor)
        params += tensor.size
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    print(f"wrote {out}: {params / 1e6:.1f}M parameters, {out.stat().st_size / 1e6:.0f} MB")
    return out


def ensure_big_model(out: Path = BIG) -> Path:
    """The big model's path, writing it first if it is not there yet."""
    return out if out.exists() else write_big_model(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BIG)
    parser.add_argument("--force", action="store_true", help="rewrite it even if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists (use --force to rewrite)")
        return 0
    started = time.monotonic()
    write_big_model(args.out)
    print(f"took {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
