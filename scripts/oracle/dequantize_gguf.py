#!/usr/bin/env python3
"""Writes a copy of a GGUF with every tensor dequantized to F32 (gguf.quants.dequantize), metadata unchanged
(general.file_type set to ALL_F32). Used to check the float64 reference against llama.cpp without
llama.cpp's Q8 activation quantization in quantized matmuls:
  dequantize_gguf.py ~/.cache/cocoon/models/gemma-3-270m-q4_k_m.gguf /tmp/gemma-3-270m-f32.gguf
"""
import sys

import numpy as np
import gguf
from gguf.quants import dequantize


def main(src, dst):
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), vtype)
    for t in r.tensors:
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
