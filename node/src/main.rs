//! `cocoon`: one binary for every role of the mesh, and the CLI that inspects it.

fn main() {}
