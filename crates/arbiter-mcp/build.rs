//! Generates the ExtMcp gRPC stubs from `proto/ext_mcp.proto` with protox, a protobuf
//! compiler in Rust: building needs no `protoc`. The compiled descriptor set is kept in
//! `OUT_DIR` too, so that a test can check the wire names and numbers. The client half is
//! compiled only with the `client` feature (tests that play agentgateway).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ext_mcp.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(["ext_mcp.proto"], ["proto"])?;
    std::fs::write(
        out.join("ext_mcp_descriptors.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .client_mod_attribute("agentgateway.dev.ext_mcp", "#[cfg(feature = \"client\")]")
        .compile_fds(descriptors)?;
    Ok(())
}
