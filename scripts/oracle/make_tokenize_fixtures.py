#!/usr/bin/env python3
"""Tokenizer fixtures from llama.cpp's llama-tokenize (built by scripts/build-llama-oracle).

  make_tokenize_fixtures.py vocabs   derives vocab-only GGUFs from SmolLM2-135M-Instruct.Q4_1.gguf (every
                                     metadata key copied, no tensors) with tokenizer.ggml.pre set to
                                     llama-bpe, qwen2, gpt-2 (llama.cpp's spelling; it refuses "gpt2") -> shaders/tests/fixtures/tokenize/smollm2-vocab-<pre>.gguf
  make_tokenize_fixtures.py cases [--bin /opt/llama-oracle/bin/llama-tokenize]
                                     writes shaders/tests/fixtures/tokenize/<name>.json for the Gemma 3 270M file,
                                     the SmolLM2 file, and the three derived vocabs.

Each case is produced by:  llama-tokenize -m MODEL --stdin --no-escape --ids --log-disable  < TEXT
(the text's exact bytes on stdin, no escape processing; llama-tokenize adds BOS when the model's
tokenizer.ggml.add_bos_token says so (add_special) and parses special tokens by default (parse_special)).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "shaders", "tests", "fixtures", "tokenize")
MODELS = os.path.expanduser("~/.cache/cocoon/models")
GEMMA = os.path.join(MODELS, "gemma-3-270m-q4_k_m.gguf")
SMOL = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
# llama.cpp refuses tokenizer.ggml.pre "gpt2" ("unknown pre-tokenizer type"); its name for the GPT-2 split is "gpt-2"
DERIVED_PRES = ["llama-bpe", "qwen2", "gpt-2"]
FLAGS = ["--stdin", "--no-escape", "--ids", "--log-disable"]

TEXTS = [
    "Hello world! This is a simple English sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, but we've seen what you'd do.",
    "HELLO hello HeLLo",
    " leading space",
    "   three leading spaces",
    "repeated     spaces   inside",
    "trailing spaces   ",
    "line one\nline two\n\nline four",
    "\ttab first\tand\t\ttabs",
    "mixed \n\t \r\n whitespace",
    "12345 3.14159",
    "1234567890 1,000,000 007",
    "naïve café 日本語 Привет",
    "👍🏽🚀",
    'fn main() { println!("hi"); }',
    "def f(x):\n    return x**2  # square\n",
    'printf("%d\\n", x); // a backslash',
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<eos>",
    "I'M SURE YOU'LL SEE IT'S DONE",
    "Hello!!!\n\nWorld...\n",
    "abc123def 4567 x1y22z333",
    "   \n\n   indented after blank lines",
    "crlf\r\n\r\nline",
    "end with newlines\n\n\n",
    "a",
    "",
]


def derived_path(pre):
    return os.path.join(OUT, f"smollm2-vocab-{pre}.gguf")


def cmd_vocabs():
    os.makedirs(OUT, exist_ok=True)
    r = gguf.GGUFReader(SMOL)
    arch = r.fields["general.architecture"].contents()
    for pre in DERIVED_PRES:
        w = gguf.GGUFWriter(derived_path(pre), arch)
        for key, f in r.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            if key == "tokenizer.ggml.pre":
                w.add_tokenizer_pre(pre)
                continue
            vtype = f.types[0]
            val = f.contents()
            if vtype == gguf.GGUFValueType.ARRAY:
                w.add_key_value(key, val, vtype, sub_type=f.types[-1])
            else:
                w.add_key_value(key, val, vtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        print(f"{derived_path(pre)}: {os.path.getsize(derived_path(pre))} bytes", file=sys.stderr)


def tokenize(bin_, model, text):
    r = subprocess.run([bin_, "-m", model] + FLAGS, input=text.encode(), capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama-tokenize failed on {model}: {r.stderr.decode()[-2000:]}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def cmd_cases(bin_):
    os.makedirs(OUT, exist_ok=True)
    targets = [("gemma3-270m", GEMMA, "gemma-3-270m-q4_k_m.gguf"),
               ("smollm2", SMOL, "SmolLM2-135M-Instruct.Q4_1.gguf")]
    targets += [(f"smollm2-{pre}", derived_path(pre), f"shaders/tests/fixtures/tokenize/smollm2-vocab-{pre}.gguf")
                for pre in DERIVED_PRES]
    for name, path, label in targets:
        try:
            cases = [{"text": t, "ids": tokenize(bin_, path, t)} for t in TEXTS]
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            continue
        doc = {"model": label, "add_special": True, "parse_special": True,
               "command": "llama-tokenize -m MODEL " + " ".join(FLAGS) + " < TEXT  (llama-cpp-python 0.3.36's llama.cpp)",
               "cases": cases}
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"{name}: {len(cases)} cases", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["vocabs", "cases"])
    ap.add_argument("--bin", default="/opt/llama-oracle/bin/llama-tokenize")
    a = ap.parse_args()
    cmd_vocabs() if a.what == "vocabs" else cmd_cases(a.bin)


if __name__ == "__main__":
    main()
