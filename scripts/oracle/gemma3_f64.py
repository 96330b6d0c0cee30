#!/usr/bin/env python3
"""Exact float64 greedy reference for the real Gemma 3 270M file (Q4_K_M: F32, Q5_0, Q4_K, Q6_K, Q8_0 tensors,
dequantized by gguf.quants.dequantize; forward in scripts/oracle/f64_forward.py, following llama.cpp's
gemma3 graph). Writes shaders/tests/fixtures/gemma3-270m/greedy.json:
  {"model", "model_sha256", "n_predict", "oracle",
   "prompts": [{"prompt", "prompt_ids", "text", "steps": [{"id", "margin"}], "first_logits_top10": [[id, logit]]}]}
margin = top-1 minus top-2 logit at that step (step 0: the logits after the last prompt token).

  gemma3_f64.py [--model PATH] [--tokenize /opt/llama-oracle/bin/llama-tokenize]
      --tokenize re-derives the prompt ids with llama.cpp and checks them against the ids below.
  gemma3_f64.py --crosscheck /opt/llama-oracle/bin/llama-oracle-logits [--f32 /tmp/gemma-3-270m-f32.gguf]
      runs llama.cpp (scripts/oracle/logits.cpp) on the same prompts (and on the F32-dequantized copy that
      scripts/oracle/dequantize_gguf.py writes) and writes llama_cpp.json beside greedy.json, with the steps
      on which each agrees with the float64 pass.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "shaders", "tests", "fixtures", "gemma3-270m")
MODEL = os.path.expanduser("~/.cache/cocoon/models/gemma-3-270m-q4_k_m.gguf")
N_PREDICT = 16
# ids from `llama-tokenize -m gemma-3-270m-q4_k_m.gguf --stdin --no-escape --ids --log-disable < TEXT` (BOS 2 added)
PROMPTS = {
    "The capital of France is": [2, 818, 5279, 529, 7001, 563],
    "Water boils at": [2, 17390, 104264, 657],
    "1, 2, 3, 4,": [2, 236770, 236764, 236743, 236778, 236764, 236743, 236800, 236764, 236743, 236812, 236764],
    "The opposite of hot is": [2, 818, 11688, 529, 3425, 563],
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detok(tokens, ids):
    out = b""
    for i in ids:
        t = tokens[i]
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            out += bytes([int(t[3:5], 16)])
        else:
            out += t.replace("\u2581", " ").encode()
    return out.decode("utf-8", errors="replace")


def llama_tokenize(bin_, model, text):
    r = subprocess.run([bin_, "-m", model, "--stdin", "--no-escape", "--ids", "--log-disable"],
                       input=text.encode(), check=True, capture_output=True)
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--tokenize")
    ap.add_argument("--crosscheck")
    ap.add_argument("--f32", help="F32-dequantized copy of --model for --crosscheck")
    a = ap.parse_args()
    sys.path.insert(0, HERE)
    import gguf

    tokens = gguf.GGUFReader(a.model).fields["tokenizer.ggml.tokens"].contents()
    if a.tokenize:
        for text, ids in PROMPTS.items():
            got = llama_tokenize(a.tokenize, a.model, text)
            if got != ids:
                sys.exit(f"llama-tokenize gives {got} for {text!r}, the table has {ids}")
        print("prompt ids match llama-tokenize", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    if a.crosscheck:
        crosscheck(a, tokens)
        return
    from f64_forward import F64Model

    m = F64Model(a.model)
    doc = {
        "model": os.path.basename(a.model),
        "model_sha256": sha256(a.model),
        "n_predict": N_PREDICT,
        "oracle": "scripts/oracle/gemma3_f64.py: numpy float64 over gguf.quants.dequantize'd weights, "
                  "no activation rounding; margin = top1 - top2 logit",
        "prompts": [],
    }
    for text, ids in PROMPTS.items():
        gen, margins, first = m.greedy(ids, N_PREDICT)
        order = np.argsort(-first, kind="stable")[:10]
        doc["prompts"].append({
            "prompt": text,
            "prompt_ids": ids,
            "text": detok(tokens, gen),
            "steps": [{"id": i, "margin": mg} for i, mg in zip(gen, margins)],
            "first_logits_top10": [[int(i), float(first[i])] for i in order],
        })
        print(f"{text!r} -> {detok(tokens, gen)!r}\n  ids {gen}\n  margins {[round(x, 4) for x in margins]}",
              file=sys.stderr)
    with open(os.path.join(OUT, "greedy.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def crosscheck_one(bin_, model, ref):
    out = []
    for p in ref["prompts"]:
        r = subprocess.run([bin_, model, "--ids", ",".join(map(str, p["prompt_ids"])),
                            "-n", str(N_PREDICT), "-t", "2"], check=True, capture_output=True, text=True)
        ll = json.loads(r.stdout)
        f_ids = [s["id"] for s in p["steps"]]
        agree = 0
        while agree < N_PREDICT and ll["ids"][agree] == f_ids[agree]:
            agree += 1
        top_f = dict((i, v) for i, v in p["first_logits_top10"])
        diffs = [abs(v - top_f[i]) for i, v in ll["first_top10"] if i in top_f]
        margin_diffs = [abs(x - s["margin"]) for x, s in zip(ll["margins"][:agree], p["steps"][:agree])]
        entry = {"prompt": p["prompt"], "prompt_ids": p["prompt_ids"], "ids": ll["ids"],
                 "text": ll["text"], "margins": ll["margins"], "first_top10": ll["first_top10"],
                 "steps_agreeing_with_f64": agree,
                 "first_top10_max_abs_logit_diff": max(diffs) if diffs else None,
                 "max_abs_margin_diff_on_agreeing_steps": max(margin_diffs) if margin_diffs else None}
        if agree < N_PREDICT:
            entry["f64_margin_at_divergence"] = p["steps"][agree]["margin"]
        out.append(entry)
        print(f"{os.path.basename(model)} {p['prompt']!r}: agree {agree}/{N_PREDICT}; llama.cpp {ll['text']!r}; "
              f"top10 |diff| {entry['first_top10_max_abs_logit_diff']:.4f}"
              + (f"; f64 margin at divergence {entry['f64_margin_at_divergence']:.4f}" if agree < N_PREDICT else ""),
              file=sys.stderr)
    return out


def crosscheck(a, tokens):
    """llama.cpp on the Q4_K_M file, and (with --f32) on its F32-dequantized copy made by dequantize_gguf.py:
    the latter has no Q8 activation quantization, so it isolates the float64 pass's own fidelity."""
    with open(os.path.join(OUT, "greedy.json")) as f:
        ref = json.load(f)
    doc = {"model": os.path.basename(a.model),
           "source": "llama.cpp CPU (llama-cpp-python 0.3.36 vendored tree) via scripts/oracle/logits.cpp, "
                     "F32 KV cache, no flash attention. On the Q4_K_M file its quantized matmuls quantize "
                     "activations to Q8 (Q8_K / Q8_0) and its GeGLU reads an F16 GELU table; "
                     "'dequantized_f32' is the same weights dequantized to F32 by scripts/oracle/dequantize_gguf.py "
                     "(F32 matmuls, only the GELU table remains)",
           "q4_k_m": crosscheck_one(a.crosscheck, a.model, ref)}
    if a.f32:
        doc["dequantized_f32"] = crosscheck_one(a.crosscheck, a.f32, ref)
    with open(os.path.join(OUT, "llama_cpp.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
