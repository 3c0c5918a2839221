//! Compiles the protos in `proto/` with a pure-Rust compiler (protox), so a
//! machine with only cargo can build prebuildd: no system `protoc`.
//!
//! Outputs in OUT_DIR: the prost/tonic code, the pbjson serde code (proto3
//! JSON for the Connect layer) and `descriptor_set.bin`, the encoded
//! FileDescriptorSet that server reflection and the wire tests use.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "gitpod/v1/identity.proto",
    "gitpod/v1/pagination.proto",
    "gitpod/v1/prebuild.proto",
    "prebuildd/v1/warm_pool_instance.proto",
    "prebuildd/v1/runner.proto",
    "prebuildd/v1/prebuild_source.proto",
    "prebuildd/v1/catalog.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The dashboard's files are embedded by rust-embed (src/transport/ui.rs);
    // a rebuilt web/dist/ has new file names, which the macro alone would
    // not notice, so a change there rebuilds the crate.
    println!("cargo:rerun-if-changed=web/dist");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let descriptor_bytes = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("descriptor_set.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        // Well-known types come from pbjson-types, which adds their proto3
        // JSON forms; prost-build only allows that mapping when it is told
        // to "compile" them (then it maps instead of generating).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Malformed protobuf must be invalid_argument, not tonic's internal.
        .codec_path("crate::transport::codec::WireCodec")
        .compile_fds(compiler.file_descriptor_set())?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        // Connect JSON clients may send fields a newer schema has; ignore them.
        .ignore_unknown_fields()
        .build(&[".gitpod.v1", ".prebuildd.v1"])?;
    Ok(())
}
