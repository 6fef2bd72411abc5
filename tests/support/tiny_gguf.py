"""Write a tiny random-weight llama GGUF that llama.cpp can really load, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, PoolingType, TokenType

__all__ = ["DEFAULT_CHAT_TEMPLATE", "VOCAB_SIZE", "write_tiny_gguf"]

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_N_LAYER = 2
_N_EMBD = 64
_N_HEAD = 4
_N_FF = 128
_WEIGHT_SCALE = 0.02
# Whole pieces after the specials and the 256 byte-fallback tokens, so common text
# tokenizes into more than bytes; earlier pieces get higher scores and merge first.
_PIECES = (
    "▁", "▁t", "▁a", "▁i", "▁s", "▁w", "▁the", "th", "he", "in", "er", "an", "re",
    "on", "at", "en", "nd", "e", "t", "a", "o", "i", "n", "s", "h", "r",
)  # fmt: skip
VOCAB_SIZE = 3 + 256 + len(_PIECES)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """SPM tokens with byte fallback: <unk>, <s>, </s>, <0x00>..<0xFF>, then the pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(_PIECES)
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    types += [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(_PIECES)
    scores = [0.0] * 259 + [-float(i) for i in range(len(_PIECES))]
    return tokens, scores, [int(t) for t in types]


def _weights(seed: int) -> dict[str, np.ndarray]:
    """Tensors by GGUF name; numpy shapes are ggml's dimensions reversed."""
    rng = np.random.default_rng(seed)

    def random(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * _WEIGHT_SCALE).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tensors = {"token_embd.weight": random(VOCAB_SIZE, _N_EMBD)}
    for i in range(_N_LAYER):
        block = f"blk.{i}"
        tensors |= {
            f"{block}.attn_norm.weight": ones(_N_EMBD),
            f"{block}.attn_q.weight": random(_N_EMBD, _N_EMBD),
            f"{block}.attn_k.weight": random(_N_EMBD, _N_EMBD),
            f"{block}.attn_v.weight": random(_N_EMBD, _N_EMBD),
            f"{block}.attn_output.weight": random(_N_EMBD, _N_EMBD),
            f"{block}.ffn_norm.weight": ones(_N_EMBD),
            f"{block}.ffn_gate.weight": random(_N_FF, _N_EMBD),
            f"{block}.ffn_up.weight": random(_N_FF, _N_EMBD),
            f"{block}.ffn_down.weight": random(_N_EMBD, _N_FF),
        }
    tensors["output_norm.weight"] = ones(_N_EMBD)
    tensors["output.weight"] = random(VOCAB_SIZE, _N_EMBD)
    return tensors


def write_tiny_gguf(
    path: Path,
    *,
    chat_template: str | None = DEFAULT_CHAT_TEMPLATE,
    embedding: bool = False,
    n_ctx: int = 256,
    seed: int = 0,
) -> Path:
    """Write a 2-layer, 64-wide F32 llama model (about 480 KB) to `path` and return it.

    The weights are random, so generated text is nonsense: tests should assert on
    structure, counts and done reasons, never on content. `embedding` adds mean pooling,
    which makes the model an embedding model by Ollama's rule.
    """
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_file_type(0)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYER)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD)
    writer.add_rope_dimension_count(_N_EMBD // _N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB_SIZE)
    if embedding:
        writer.add_pooling_type(PoolingType.MEAN)
    tokens, scores, types = _vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, tensor in _weights(seed).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
