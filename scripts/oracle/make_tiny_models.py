#!/usr/bin/env python3
"""Random-weight GGUF fixtures for cocoon's architecture tests, and their oracle outputs.

  make_tiny_models.py models      [--out shaders/tests/fixtures/arch]
      writes llama.gguf, qwen2.gguf, qwen3.gguf, gemma3.gguf (F32 weights, fixed seeds, the metadata and
      tensor names llama.cpp's converter writes for each architecture, a 320-token byte-level gpt2 vocab)
  make_tiny_models.py references  [--out ...] [--logits /opt/llama-oracle/bin/llama-oracle-logits]
      runs llama.cpp (scripts/oracle/logits.cpp) and the float64 numpy forward (f64_forward.py) on each
      fixture and writes <arch>.json
  make_tiny_models.py bench       [--path ~/.cache/cocoon/models/synthetic-llama-3.2-1b-shape.gguf]
      a Llama-3.2-1B-shaped file (16 blocks, d 2048, ffn 8192, 32/8 heads of 64, vocab 128256, tied
      embeddings, rope_freqs) with Q4_K_M's type layout (Q4_K, Q6_K for attn_v/ffn_down on the
      use_more_bits layers and for token_embd) and random quants; for benchmarks, never committed.

Fixtures (seeded; the .gguf bytes are reproducible with gguf 0.19 + numpy 2):
  llama  : d 64, 2 blocks, 4 heads x 16 (kv 2), ffn 192, rope base 10000 with Llama-3.1-style
           rope_freqs.weight (factor 8, low/high freq factor 1/4, original context 64), untied output.weight,
           add_bos (BOS 256).
  qwen2  : d 64, 2 blocks, 4 heads x 16 (kv 2), ffn 160, q/k/v biases, rope base 1e6, tied embeddings, no BOS.
  qwen3  : d 64, 2 blocks, 4 heads x 32 (head_dim 32 != 64/4; kv 2), ffn 192, attn_q_norm/attn_k_norm,
           rope base 1e6, tied, no BOS.
  gemma3 : d 64, 7 blocks (0-4 and 6 local, 5 global), 4 heads x 24 (head_dim 24 != 64/4; kv 1), ffn 64,
           sliding_window 4, rope base 1e6 (local layers 10000, the default), QK-norm, post norms (final
           values, i.e. with Gemma's +1 already in), tied, add_bos (BOS 256).
Prompt: 12 seeded random ids (after BOS where the model adds one); 16 greedy steps.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "shaders", "tests", "fixtures", "arch")
DEFAULT_LOGITS = "/opt/llama-oracle/bin/llama-oracle-logits"
N_PREDICT = 16
PROMPT_LEN = 12

# ---------------------------------------------------------------- vocab


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


TRAIN_TEXT = (
    "the quick brown fox jumps over the lazy dog. the capital of france is paris. "
    "water boils at one hundred degrees. in the beginning there was the word, and the word was good. "
    "then they went to the market and bought three apples, two pears and the bread."
)
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_vocab(n_merges=61):
    """256 byte tokens (GPT-2 byte-to-unicode, in byte order), n_merges BPE merges learned greedily on
    TRAIN_TEXT (GPT-2 pre-split on spaces), then the control tokens. Returns tokens, types, merges, bos."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = {}
    for i, w in enumerate(TRAIN_TEXT.split(" ")):
        w = (" " if i else "") + w
        key = tuple(b2u[b] for b in w.encode())
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(CONTROL)
    bos = len(tokens)
    tokens = tokens + CONTROL
    return tokens, types, merges, bos


# ---------------------------------------------------------------- specs

SPECS = {
    "llama": dict(d=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16, ffn=192, base=10000.0, eps=1e-5,
                  tied=False, add_bos=True, pre="llama-bpe", rope_freqs=True, seed=1001),
    "qwen2": dict(d=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16, ffn=160, base=1000000.0, eps=1e-6,
                  tied=True, add_bos=False, pre="qwen2", bias=True, out_gain=2.0, seed=1002),
    "qwen3": dict(d=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=32, ffn=192, base=1000000.0, eps=1e-6,
                  tied=True, add_bos=False, pre="qwen2", qk_norm=True, seed=1003),
    "gemma3": dict(d=64, n_layer=7, n_head=4, n_head_kv=1, head_dim=24, ffn=64, base=1000000.0, eps=1e-6,
                   tied=True, add_bos=True, pre="default", qk_norm=True, swa=4, post_norm=(2.0, 0.5),
                   seed=1004),
}


def llama3_rope_factors(head_dim, base, factor=8.0, low=1.0, high=4.0, old_ctx=64):
    # as llama.cpp's convert_hf_to_gguf.py LlamaModel writes rope_freqs.weight for rope_type "llama3"
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def write_tiny(arch, path):
    s = SPECS[arch]
    rng = np.random.default_rng(s["seed"])
    tokens, types, merges, bos = tiny_vocab()
    n_vocab = len(tokens)
    d, hd, H, Hkv, ff = s["d"], s["head_dim"], s["n_head"], s["n_head_kv"], s["ffn"]

    def lin(n_out, n_in, gain=1.0):  # numpy [out, in] == GGUF shape [in, out]
        return (rng.standard_normal((n_out, n_in)) * gain / math.sqrt(n_in)).astype(np.float32)

    def norm(n, center=1.0, spread=0.1):
        return (center + spread * rng.standard_normal(n)).astype(np.float32)

    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"cocoon tiny {arch}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(ff)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    if hd != d // H:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if arch == "llama":
        w.add_rope_dimension_count(hd)
        w.add_vocab_size(n_vocab)
    w.add_rope_freq_base(s["base"])
    w.add_layer_norm_rms_eps(s["eps"])
    if "swa" in s:
        w.add_sliding_window(s["swa"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(s["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(bos)
    w.add_add_bos_token(s["add_bos"])

    gemma = arch == "gemma3"
    # embeddings: gemma multiplies by sqrt(d), so its rows are ~N(0, 1/d); tied heads are scaled so the
    # logits come out with a spread of a few units (wide top-2 margins)
    emb_std = 1.0 / math.sqrt(d) if gemma else (0.5 if s["tied"] else 1.0)
    w.add_tensor("token_embd.weight", (rng.standard_normal((n_vocab, d)) * emb_std).astype(np.float32))
    w.add_tensor("output_norm.weight", norm(d, 4.0 if gemma else 1.0, 0.3 if gemma else 0.1))
    if not s["tied"]:
        w.add_tensor("output.weight", lin(n_vocab, d, 4.0))
    if s.get("rope_freqs"):
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(hd, s["base"]))
    for il in range(s["n_layer"]):
        b = f"blk.{il}."
        w.add_tensor(b + "attn_norm.weight", norm(d))
        w.add_tensor(b + "attn_q.weight", lin(H * hd, d, 1.0 if s.get("qk_norm") else 3.0))
        w.add_tensor(b + "attn_k.weight", lin(Hkv * hd, d))
        w.add_tensor(b + "attn_v.weight", lin(Hkv * hd, d))
        if s.get("bias"):
            w.add_tensor(b + "attn_q.bias", (0.5 * rng.standard_normal(H * hd)).astype(np.float32))
            w.add_tensor(b + "attn_k.bias", (0.5 * rng.standard_normal(Hkv * hd)).astype(np.float32))
            w.add_tensor(b + "attn_v.bias", (0.2 * rng.standard_normal(Hkv * hd)).astype(np.float32))
        w.add_tensor(b + "attn_output.weight", lin(d, H * hd, s.get("out_gain", 1.0)))
        if s.get("qk_norm"):
            # peaky attention, so positions (RoPE, the window) matter
            w.add_tensor(b + "attn_q_norm.weight", norm(hd, 2.0, 0.3))
            w.add_tensor(b + "attn_k_norm.weight", norm(hd, 2.0, 0.3))
        if gemma:
            w.add_tensor(b + "post_attention_norm.weight", norm(d, *s.get("post_norm", (1.0, 0.1))))
        w.add_tensor(b + "ffn_norm.weight", norm(d))
        w.add_tensor(b + "ffn_gate.weight", lin(ff, d, 2.0))
        w.add_tensor(b + "ffn_up.weight", lin(ff, d))
        w.add_tensor(b + "ffn_down.weight", lin(d, ff, s.get("out_gain", 1.0)))
        if gemma:
            w.add_tensor(b + "post_ffw_norm.weight", norm(d, *s.get("post_norm", (1.0, 0.1))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # the prompt: BOS (where the model adds one) + PROMPT_LEN ids over the non-control tokens
    prompt = [int(x) for x in rng.integers(0, bos, PROMPT_LEN)]
    return ([bos] if s["add_bos"] else []) + prompt


def cmd_models(out):
    os.makedirs(out, exist_ok=True)
    prompts = {}
    for arch in SPECS:
        path = os.path.join(out, f"{arch}.gguf")
        prompts[arch] = write_tiny(arch, path)
        print(f"{path}: {os.path.getsize(path)} bytes", file=sys.stderr)
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompts, f, indent=1)
        f.write("\n")


def cmd_references(out, logits_bin):
    sys.path.insert(0, HERE)
    from f64_forward import F64Model

    with open(os.path.join(out, "prompts.json")) as f:
        prompts = json.load(f)
    for arch in SPECS:
        path = os.path.join(out, f"{arch}.gguf")
        ids = prompts[arch]
        r = subprocess.run([logits_bin, path, "--ids", ",".join(map(str, ids)), "-n", str(N_PREDICT),
                            "--full-logits", "-t", "2"], check=True, capture_output=True, text=True)
        ref = json.loads(r.stdout)
        assert ref["prompt_ids"] == ids
        m = F64Model(path)
        f_ids, f_margins, f_first = m.greedy(ids, N_PREDICT)
        first = np.array(ref["first_logits"])
        diff = float(np.max(np.abs(first - f_first)))
        agree = 0
        while agree < N_PREDICT and ref["ids"][agree] == f_ids[agree]:
            agree += 1
        doc = {
            "model": f"{arch}.gguf",
            "source": "llama.cpp (llama-cpp-python 0.3.36 vendored tree, CPU, F32 KV cache, no flash attention) "
                      "via scripts/oracle/logits.cpp; f64: scripts/oracle/f64_forward.py",
            "prompt_ids": ids,
            "ids": ref["ids"],
            "margins": ref["margins"],
            "first_logits": ref["first_logits"],
            "f64": {"ids": f_ids, "margins": f_margins, "first_logits": [float(x) for x in f_first]},
            "first_logits_max_abs_diff_llama_cpp_vs_f64": diff,
            "greedy_steps_agreeing": agree,
        }
        with open(os.path.join(out, f"{arch}.json"), "w") as f:
            json.dump(doc, f)
            f.write("\n")
        print(f"{arch}: llama.cpp ids {ref['ids']}\n  f64 ids {f_ids}\n  agree {agree}/{N_PREDICT}, "
              f"first-logit max |diff| {diff:.3g}, min margin llama.cpp {min(ref['margins']):.4f} "
              f"f64 {min(f_margins):.4f}", file=sys.stderr)


# ---------------------------------------------------------------- benchmark file

QK_K = 256


def q4_k_rows(rng, rows, cols, std):
    """Random Q4_K rows: every sub-block scale and min 32, dmin = 7.5 d (values centred on 0), random nibbles."""
    nb = cols // QK_K
    d = np.float16(std / (32 * 4.61))
    blk = np.empty((rows, nb, 144), dtype=np.uint8)
    hdr = np.array([d, np.float16(7.5 * float(d))], dtype=np.float16).view(np.uint8)
    blk[:, :, 0:4] = hdr
    blk[:, :, 4:12] = 0xA0  # 6-bit scales/mins = 32 (low 6 bits 32, high bits of sub-blocks 4-7 = 2)
    blk[:, :, 12:16] = 0x00
    blk[:, :, 16:] = rng.integers(0, 256, (rows, nb, 128), dtype=np.uint8)
    return blk.reshape(rows, nb * 144)


def q6_k_rows(rng, rows, cols, std):
    """Random Q6_K rows: every int8 scale 8, random 6-bit quants."""
    nb = cols // QK_K
    blk = np.empty((rows, nb, 210), dtype=np.uint8)
    blk[:, :, 0:192] = rng.integers(0, 256, (rows, nb, 192), dtype=np.uint8)
    blk[:, :, 192:208] = 8
    blk[:, :, 208:210] = np.array([np.float16(std / (8 * 18.5))], dtype=np.float16).view(np.uint8)
    return blk.reshape(rows, nb * 210)


def cmd_bench(path):
    t0 = time.time()
    rng = np.random.default_rng(3201)
    n_layer, d, ff, H, Hkv, hd, n_vocab = 16, 2048, 8192, 32, 8, 64, 128256
    Q4K, Q6K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K

    def use_more_bits(i, n):  # llama.cpp's llama-quant.cpp, for Q4_K_M's attn_v and ffn_down
        return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2

    def add_q(name, rows, cols, qtype, std=0.02):
        data = (q6_k_rows if qtype == Q6K else q4_k_rows)(rng, rows, cols, std)
        w.add_tensor(name, data, raw_dtype=qtype)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("synthetic llama 3.2 1b shape (random weights)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_context_length(131072)
    w.add_embedding_length(d)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(ff)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + [f"tok{i}" for i in range(256, 128000)]
    tokens += ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(254)]
    types = [gguf.TokenType.NORMAL] * 128000 + [gguf.TokenType.CONTROL] * 256
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "Ġ a", "h e", "i n"])
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128001)
    w.add_add_bos_token(True)
    add_q("token_embd.weight", n_vocab, d, Q6K, 0.5)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    w.add_tensor("rope_freqs.weight", llama3_rope_factors(hd, 500000.0, 32.0, 1.0, 4.0, 8192))
    for il in range(n_layer):
        b = f"blk.{il}."
        w.add_tensor(b + "attn_norm.weight", np.ones(d, dtype=np.float32))
        add_q(b + "attn_q.weight", H * hd, d, Q4K)
        add_q(b + "attn_k.weight", Hkv * hd, d, Q4K)
        add_q(b + "attn_v.weight", Hkv * hd, d, Q6K if use_more_bits(il, n_layer) else Q4K)
        add_q(b + "attn_output.weight", d, H * hd, Q4K)
        w.add_tensor(b + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        add_q(b + "ffn_gate.weight", ff, d, Q4K)
        add_q(b + "ffn_up.weight", ff, d, Q4K)
        add_q(b + "ffn_down.weight", d, ff, Q6K if use_more_bits(il, n_layer) else Q4K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: {os.path.getsize(path)} bytes in {time.time() - t0:.1f} s", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["models", "references", "bench"])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--logits", default=DEFAULT_LOGITS)
    ap.add_argument("--path", default=os.path.expanduser("~/.cache/cocoon/models/synthetic-llama-3.2-1b-shape.gguf"))
    a = ap.parse_args()
    if a.what == "models":
        cmd_models(a.out)
    elif a.what == "references":
        cmd_references(a.out, a.logits)
    else:
        cmd_bench(a.path)


if __name__ == "__main__":
    main()
