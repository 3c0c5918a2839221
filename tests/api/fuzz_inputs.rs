//! Every input the fuzz targets were seeded with, and every input a fuzz
//! run ever crashed on (fuzz/regressions/<target>/), through the same entry
//! points, on every test run: a crash found once stays fixed.

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for kind in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
            for entry in entries.flatten() {
                all.push(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    all
}

#[test]
fn fuzz_seeds_and_regressions_do_not_panic() {
    let mut count = 0;
    for (target, run) in [
        (
            "connect_json",
            (|d: &[u8]| {
                if let Some((s, b)) = d.split_first() {
                    prebuildd::fuzzing::connect_body(*s, true, b)
                }
            }) as fn(&[u8]),
        ),
        ("connect_proto", |d: &[u8]| {
            if let Some((s, b)) = d.split_first() {
                prebuildd::fuzzing::connect_body(*s, false, b)
            }
        }),
        ("connect_get", |d: &[u8]| {
            if let Some((s, q)) = d.split_first() {
                prebuildd::fuzzing::connect_get_query(*s, &String::from_utf8_lossy(q))
            }
        }),
        ("page_token", |d: &[u8]| prebuildd::fuzzing::page_token(&String::from_utf8_lossy(d))),
    ] {
        for input in inputs(target) {
            run(&input);
            count += 1;
        }
    }
    assert!(count >= 6, "the seed inputs are there ({count})");
}
