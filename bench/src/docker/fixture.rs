//! What the docker bench builds before it measures: a base image's rootfs
//! from busybox, and a project of source-like files.

use super::*;

/// A tar of a busybox rootfs: the applets as links to it, root and a `dev`
/// user (UID 1000), `/workspaces` and `/opt`.
pub(super) fn busybox_rootfs(applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, owner: u64| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_size(0);
        builder.append_data(&mut header, path, std::io::empty())
    };
    for (path, mode, owner) in [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/dev", 0o755, 1000),
        ("opt", 0o755, 0),
        ("workspaces", 0o755, 0),
        ("proc", 0o755, 0),
        ("sys", 0o755, 0),
        ("dev", 0o755, 0),
    ] {
        dir(&mut builder, path, mode, owner)?;
    }
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, content: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, content)
    };
    file(&mut builder, "bin/busybox", 0o755, &std::fs::read("/bin/busybox")?)?;
    file(&mut builder, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n")?;
    file(&mut builder, "etc/group", 0o644, b"root:x:0:\ndev:x:1000:\n")?;
    for applet in applets {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    builder.into_inner()
}

/// Words of source-like text (it compresses about as source does).
pub(super) const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "pub",
    "struct",
    "impl",
    "self",
    "match",
    "return",
    "Some(value)",
    "None",
    "Ok(())",
    "Err(error)",
    "=>",
    "{",
    "}",
    "(",
    ");",
    "&str",
    "String",
    "Vec<u8>",
    "usize",
    "config",
    "runner",
    "snapshot",
    "instance",
    "container",
    "workspace",
    "prebuild",
    "pool",
    "async",
    ".await?",
    "if",
    "else",
    "for",
    "in",
    "while",
    "loop",
    "break;",
    "const",
    "use",
    "crate::",
    "super::",
    "where",
    "Clone",
    "Debug",
    "#[derive(Debug)]",
    "assert_eq!",
    "format!(\"{}\",",
    "0",
    "1",
    "42",
    "true",
    "false",
    "//",
    "->",
    "::new()",
];

/// The project: `.devcontainer/devcontainer.json` and the workspace's text
/// files; and, in `outside`, the same number of random bytes as the
/// onCreateCommand writes in the container (for the host baselines).
/// Returns the workspace's size in bytes.
pub(super) fn generate(project: &Path, outside: &Path, base_image: &str) -> std::io::Result<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    std::fs::create_dir_all(project.join(".devcontainer"))?;
    let config = serde_json::json!({ "name": "bench", "image": base_image, "onCreateCommand": on_create() });
    let config = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
    std::fs::write(project.join(".devcontainer/devcontainer.json"), &config)?;
    let mut bytes = config.len() as u64;
    let mut text = Vec::with_capacity(FILE_BYTES + 256);
    for d in 0..DIRS {
        let dir = project.join("src").join(format!("module_{d:02}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..FILES_PER_DIR {
            text.clear();
            while text.len() < FILE_BYTES {
                text.extend(std::iter::repeat_n(b' ', 4 * rng.random_range(0..4)));
                for _ in 0..rng.random_range(3..10) {
                    if rng.random_range(0..6) == 0 {
                        for _ in 0..rng.random_range(4..12) {
                            text.push(b"abcdefghijklmnopqrstuvwxyz_0123456789"[rng.random_range(0..37)]);
                        }
                    } else {
                        text.extend_from_slice(WORDS[rng.random_range(0..WORDS.len())].as_bytes());
                    }
                    text.push(b' ');
                }
                text.push(b'\n');
            }
            text.truncate(FILE_BYTES);
            std::fs::write(dir.join(format!("file_{f:03}.rs")), &text)?;
            bytes += text.len() as u64;
        }
    }
    std::fs::create_dir_all(outside)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(outside.join("bench-build-output"))?);
    let mut chunk = vec![0u8; 1_000_000];
    for _ in 0..OUTSIDE_MB {
        rng.fill_bytes(&mut chunk);
        std::io::Write::write_all(&mut file, &chunk)?;
    }
    std::io::Write::flush(&mut file)?;
    Ok(bytes)
}
