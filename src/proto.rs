//! Generated protobuf code: prost messages, tonic services and pbjson serde
//! impls for `gitpod.v1` (the official schema) and `prebuildd.v1` (our own
//! extensions, kept out of `gitpod.v1`).

#![allow(clippy::all, missing_docs, rustdoc::all)]

pub mod gitpod {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/gitpod.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/gitpod.v1.serde.rs"));
    }
}

pub mod prebuildd {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/prebuildd.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/prebuildd.v1.serde.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every file we serve (with imports), for
/// server reflection and the wire-compatibility test.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));
