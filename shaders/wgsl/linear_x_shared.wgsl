// The linear kernel's input loads (before linear.wgsl) on CPU adapters, where the
// workgroup is one subgroup of at least 8 lanes and every lane needs the same inputs:
// lane l loads the group's vec4 l % 8 and the lanes share them with subgroupBroadcast.
// llvmpipe loads each lane's address on its own (a bounds-checked scalar load per lane
// and component), so 8 lanes loading the same vec4 cost as much as 8 different ones; a
// broadcast is a register shuffle.
fn x_raw(xt: u32, g: u32) -> array<vec4<f32>, 8> {
    let mine = xv(xt + g * 8u + x_lane, g * 8u + x_lane);
    var r: array<vec4<f32>, 8>;
    r[0] = subgroupBroadcast(mine, 0u);
    r[1] = subgroupBroadcast(mine, 1u);
    r[2] = subgroupBroadcast(mine, 2u);
    r[3] = subgroupBroadcast(mine, 3u);
    r[4] = subgroupBroadcast(mine, 4u);
    r[5] = subgroupBroadcast(mine, 5u);
    r[6] = subgroupBroadcast(mine, 6u);
    r[7] = subgroupBroadcast(mine, 7u);
    return r;
}
