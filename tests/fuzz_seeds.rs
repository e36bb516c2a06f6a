//! The fuzz seed corpus (`fuzz/corpus/<target>/`), replayed through the same
//! harness entry points the fuzz targets call (`fuzz/src/lib.rs`), on stable and in
//! every `cargo test`: a seed that panics (a regression found by fuzzing) fails here.
//!
//! Compiled into the library's unit tests (`src/lib.rs` includes this file and the
//! harness with `#[path]`), where the harness reaches the internals it checks
//! through `tunnel::fuzz_api` without making them public. Every target in
//! `fuzz/fuzz_targets` must have a replay here: [`every_target_is_replayed`].

use super::fuzz_harness as harness;

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
    replay("edge_request", harness::edge_request);
}

#[test]
fn client_response() {
    replay("client_response", harness::client_response);
}

#[test]
fn jwt() {
    replay("jwt", harness::jwt);
}

#[test]
fn edge_config() {
    replay("edge_config", harness::edge_config);
}

#[test]
fn hostname() {
    replay("hostname", harness::hostname);
}

#[test]
fn frame() {
    replay("frame", harness::frame);
}

#[test]
fn frame_header() {
    replay("frame_header", harness::frame_header);
}

#[test]
fn frame_decoder() {
    replay("frame_decoder", harness::frame_decoder);
}

/// The replays above, by name: a new fuzz target without one fails here.
const REPLAYED: &[&str] = &[
    "client_response",
    "edge_config",
    "edge_request",
    "frame",
    "frame_decoder",
    "frame_header",
    "hostname",
    "jwt",
];

#[test]
fn every_target_is_replayed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    targets.sort();
    assert_eq!(targets, REPLAYED, "fuzz targets and seed replays differ");
}
