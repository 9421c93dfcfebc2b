//! Compiles `proto/` with protox (pure Rust, no system protoc) and writes the descriptor set for reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["inventory/v1/inventory.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds ignores file_descriptor_set_path, so the set for reflection is written here.
    fs::write(out.join("inventory_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
