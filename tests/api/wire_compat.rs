//! Our compiled descriptors against the official ones that PyPI
//! `gitpod-sdk==1.2.0` ships: message by message, field by field.

use std::path::PathBuf;

/// The Python with `gitpod-sdk==1.2.0` that the test script installs
/// (`PREBUILDD_SDK_PYTHON`, else `.tools/sdk-1.2/bin/python`).
fn sdk_python() -> PathBuf {
    if let Ok(path) = std::env::var("PREBUILDD_SDK_PYTHON") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/sdk-1.2/bin/python");
    assert!(
        local.exists(),
        "no Python with gitpod-sdk==1.2.0: run the test suite with scripts/test (it installs it), or set PREBUILDD_SDK_PYTHON"
    );
    local
}

#[test]
fn descriptors_match_the_official_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.binpb");
    std::fs::write(&ours, prebuildd::proto::FILE_DESCRIPTOR_SET).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/wire_compat.py");
    let output = std::process::Command::new(sdk_python()).arg(&script).arg(&ours).output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "wire differences:\n{stdout}\n{stderr}");
    assert!(stdout.contains("wire compatible"), "{stdout}");
}

#[test]
fn the_comparison_detects_a_changed_field_number() {
    use prost::Message;
    let mut set = prost_types::FileDescriptorSet::decode(prebuildd::proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = set.file.iter_mut().find(|f| f.name() == "gitpod/v1/prebuild.proto").unwrap();
    let message = file.message_type.iter_mut().find(|m| m.name() == "PrebuildStatus").unwrap();
    message.field[0].number = Some(42);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.binpb");
    std::fs::write(&broken, set.encode_to_vec()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/wire_compat.py");
    let output = std::process::Command::new(sdk_python()).arg(&script).arg(&broken).output().expect("run python");
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("PrebuildStatus"));
}
