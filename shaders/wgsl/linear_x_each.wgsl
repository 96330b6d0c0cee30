// The linear kernel's input loads (before linear.wgsl): every invocation loads each of a
// group's 8 input vec4s itself.
fn x_raw(xt: u32, g: u32) -> array<vec4<f32>, 8> {
    var r: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = xv(xt + g * 8u + i, g * 8u + i);
    }
    return r;
}
