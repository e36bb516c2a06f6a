//! The fuzz seed corpus (`fuzz/corpus/<target>/`), replayed through the same
//! `tunnel::fuzzing` entry points the fuzz targets call, on stable and in every
//! `cargo test`: a seed that panics (a regression found by fuzzing) fails here.

use std::path::{Path, PathBuf};

/// Every seed of `target`, sorted; fails when there are none, so a moved or
/// emptied corpus cannot pass silently.
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    for path in seeds(target) {
        let data = std::fs::read(&path).expect("a readable seed");
        // Shown only when the seed panics.
        eprintln!("replaying {}", path.display());
        entry(&data);
    }
}

#[test]
fn edge_request() {
    replay("edge_request", tunnel::fuzzing::edge_request);
}

#[test]
fn client_response() {
    replay("client_response", tunnel::fuzzing::client_response);
}

#[test]
fn jwt() {
    replay("jwt", tunnel::fuzzing::jwt);
}

#[test]
fn edge_config() {
    replay("edge_config", tunnel::fuzzing::edge_config);
}

#[test]
fn hostname() {
    replay("hostname", tunnel::fuzzing::hostname);
}

#[test]
fn frame() {
    replay("frame", tunnel::fuzzing::frame);
}
