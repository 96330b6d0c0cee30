//! Compiles `proto/*.proto` with protox (pure Rust, no system protoc) and prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/announce.proto",
        "proto/infer.proto",
        "proto/channel.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        // A tensor chunk's data is a slice of the decrypted frame it came in, not a copy.
        .bytes([".cocoon.infer.v1.TensorChunk.data"])
        .compile_fds(fds)?;
    Ok(())
}
