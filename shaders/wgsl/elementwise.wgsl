// Element-wise ops over N floats: OP 0 residual add (y = a + b), OP 1 SwiGLU
// (y = silu(a) * b), OP 2 GeGLU (y = gelu_tanh(a) * b). The block kernels fuse the
// activations into `linear`; these stand alone.
override N: u32 = 64u;
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.044715 * x * x * x)));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= N {
        return;
    }
    if OP == 0u {
        y[i] = a[i] + b[i];
    } else if OP == 1u {
        let g = a[i];
        y[i] = g / (1.0 + exp(-g)) * b[i];
    } else {
        y[i] = gelu_tanh(a[i]) * b[i];
    }
}
