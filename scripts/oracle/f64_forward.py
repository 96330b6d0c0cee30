"""Exact float64 forward pass (numpy) for the GGUF architectures cocoon runs: llama (with
rope_freqs.weight), qwen2 (QKV bias), qwen3 (per-head QK RMS-norm) and gemma3 (embedding x sqrt(d),
QK-norm, post-attention/post-FFN norms, GELU-tanh GeGLU, 5 local : 1 global sliding-window layers,
local RoPE base gemma3.rope.freq_base_swa (default 10000)). Follows llama.cpp's graphs
(src/models/{llama,qwen2,qwen3,gemma3}.cpp of the llama-cpp-python 0.3.36 vendored tree) op for op,
but in float64 on weights dequantized by gguf.quants.dequantize, with no activation rounding
(llama.cpp's CPU backend rounds the GeGLU gate through an F16 GELU table and quantizes activations to
Q8 for quantized matmuls; this does neither). An independent oracle: it shares no code with cocoon.
"""
import numpy as np
import gguf
from gguf.quants import dequantize

NEOX_ARCHES = {"qwen2", "qwen3", "gemma3"}
SUPPORTED = {"llama", "qwen2", "qwen3", "gemma3"}


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class F64Model:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.arch = arch = _field(r, "general.architecture")
        if arch not in SUPPORTED:
            raise ValueError(f"unsupported architecture {arch}")
        p = arch + "."
        self.n_layer = int(_field(r, p + "block_count"))
        self.d = int(_field(r, p + "embedding_length"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.head_dim = int(_field(r, p + "attention.key_length", self.d // self.n_head))
        self.head_dim_v = int(_field(r, p + "attention.value_length", self.head_dim))
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon"))
        self.base = float(_field(r, p + "rope.freq_base", 10000.0))
        self.base_swa = float(_field(r, p + "rope.freq_base_swa", 10000.0))
        self.swa = int(_field(r, p + "attention.sliding_window", 0)) if arch == "gemma3" else 0
        self.softcap = float(_field(r, p + "final_logit_softcapping", 0.0)) if arch == "gemma3" else 0.0
        self.neox = arch in NEOX_ARCHES
        self.w = {}
        for t in r.tensors:
            a = dequantize(np.asarray(t.data), t.tensor_type)
            self.w[t.name] = np.asarray(a, dtype=np.float64).reshape([int(x) for x in reversed(t.shape)])
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])
        self.freq_factors = self.w.get("rope_freqs.weight")
        self.n_vocab = self.w["token_embd.weight"].shape[0]
        self.reset()

    def reset(self):
        self.k = [np.zeros((0, self.n_head_kv, self.head_dim)) for _ in range(self.n_layer)]
        self.v = [np.zeros((0, self.n_head_kv, self.head_dim_v)) for _ in range(self.n_layer)]
        self.pos = 0

    def is_swa(self, il):
        return self.swa > 0 and il % 6 < 5

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, base, use_factors):
        # x: [T, H, hd]; llama.cpp's rope: theta_i = pos * base^(-2i/n_rot) / freq_factor[i]
        n = self.n_rot
        inv = base ** (-np.arange(0, n, 2, dtype=np.float64) / n)
        if use_factors and self.freq_factors is not None:
            inv = inv / self.freq_factors
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        if self.neox:
            a, b = x[..., : n // 2], x[..., n // 2 : n]
            out[..., : n // 2] = a * c - b * s
            out[..., n // 2 : n] = b * c + a * s
        else:
            a, b = x[..., 0:n:2], x[..., 1:n:2]
            out[..., 0:n:2] = a * c - b * s
            out[..., 1:n:2] = b * c + a * s
        return out

    def forward(self, ids, all_logits=False):
        """Appends ids at positions pos.. to the cache; returns logits of the last (or every) new position."""
        W, L = self.w, "blk.%d."
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        pos = np.arange(self.pos, self.pos + T)
        x = W["token_embd.weight"][ids]
        if self.arch == "gemma3":
            x = x * np.sqrt(float(self.d))
        g = self.n_head // self.n_head_kv
        for il in range(self.n_layer):
            b = L % il
            h = self.rms(x, W[b + "attn_norm.weight"])
            q = h @ W[b + "attn_q.weight"].T
            k = h @ W[b + "attn_k.weight"].T
            v = h @ W[b + "attn_v.weight"].T
            if b + "attn_q.bias" in W:
                q = q + W[b + "attn_q.bias"]
                k = k + W[b + "attn_k.bias"]
                v = v + W[b + "attn_v.bias"]
            q = q.reshape(T, self.n_head, self.head_dim)
            k = k.reshape(T, self.n_head_kv, self.head_dim)
            v = v.reshape(T, self.n_head_kv, self.head_dim_v)
            if b + "attn_q_norm.weight" in W:
                q = self.rms(q, W[b + "attn_q_norm.weight"])
                k = self.rms(k, W[b + "attn_k_norm.weight"])
            base = self.base_swa if self.is_swa(il) else self.base
            q = self.rope(q, pos, base, True)
            k = self.rope(k, pos, base, True)
            self.k[il] = np.concatenate([self.k[il], k])
            self.v[il] = np.concatenate([self.v[il], v])
            K, V = self.k[il], self.v[il]
            kpos = np.arange(K.shape[0])
            # [T, S]: causal, and for local layers key position > query position - window
            mask = kpos[None, :] <= pos[:, None]
            if self.is_swa(il):
                mask &= (pos[:, None] - kpos[None, :]) < self.swa
            Kx = np.repeat(K, g, axis=1)  # [S, H, hd]
            Vx = np.repeat(V, g, axis=1)
            sc = np.einsum("thd,shd->hts", q, Kx) / np.sqrt(float(self.head_dim))
            sc = np.where(mask[None], sc, -np.inf)
            sc = sc - sc.max(axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(axis=-1, keepdims=True)
            att = np.einsum("hts,shd->thd", pr, Vx).reshape(T, self.n_head * self.head_dim_v)
            att = att @ W[b + "attn_output.weight"].T
            if self.arch == "gemma3":
                att = self.rms(att, W[b + "post_attention_norm.weight"])
            x = x + att
            h = self.rms(x, W[b + "ffn_norm.weight"])
            gate = h @ W[b + "ffn_gate.weight"].T
            up = h @ W[b + "ffn_up.weight"].T
            if self.arch == "gemma3":
                act = 0.5 * gate * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (gate + 0.044715 * gate ** 3)))
            else:
                act = gate / (1.0 + np.exp(-gate))
            f = (act * up) @ W[b + "ffn_down.weight"].T
            if self.arch == "gemma3":
                f = self.rms(f, W[b + "post_ffw_norm.weight"])
            x = x + f
        self.pos += T
        hx = x if all_logits else x[-1:]
        hx = self.rms(hx, W["output_norm.weight"])
        logits = hx @ self.out.T
        if self.softcap:
            logits = np.tanh(logits / self.softcap) * self.softcap
        return logits if all_logits else logits[0]

    def greedy(self, prompt_ids, n):
        """Greedy-decodes n tokens: returns (ids, margins, first_logits); margin = top1 - top2 logit."""
        self.reset()
        logits = self.forward(prompt_ids)
        first = logits.copy()
        ids, margins = [], []
        for step in range(n):
            o = np.argsort(-logits, kind="stable")
            ids.append(int(o[0]))
            margins.append(float(logits[o[0]] - logits[o[1]]))
            if step + 1 < n:
                logits = self.forward([int(o[0])])
        return ids, margins, first
