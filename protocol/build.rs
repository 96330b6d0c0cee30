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
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
