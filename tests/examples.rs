//! Every shipped example config (`examples/*.toml`) passes `check-config`, and the
//! main one starts a real edge that carries a stream, as the README's quickstart
//! says (rathole tests every example config it ships, too).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::origin::EchoOrigin;
use crate::support::{Proc, assert_exit, bin, run, tempdir, write_test_pki};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    found.sort();
    found
}

#[test]
fn every_example_config_passes_check_config() {
    let all = examples();
    let names: Vec<String> = all
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for want in ["edge.toml", "edge-tls.toml", "edge-bastion.toml"] {
        assert!(names.iter().any(|n| n == want), "examples/{want} missing");
    }
    for example in all {
        // A copy, so no signing key is made in the source tree; the TLS example
        // gets the certificate files the README tells the reader to make.
        let dir = tempdir();
        let copy = dir.path().join(example.file_name().unwrap());
        let text = std::fs::read_to_string(&example).unwrap();
        std::fs::write(&copy, &text).unwrap();
        if text.contains("tls_cert") {
            write_test_pki(dir.path(), &["db.example.test", "*.dev.example.test"]);
        }
        let out = run(
            &["edge", "--config", copy.to_str().unwrap(), "check-config"],
            &[],
        );
        assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": ok ("), "{}: {stdout}", example.display());
        assert!(
            !dir.path().join("signing-key.pem").exists(),
            "check-config must not create the signing key"
        );
    }
}

#[test]
fn the_main_example_starts_an_edge_that_carries_a_stream() {
    let origin = EchoOrigin::start();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edge.toml"))
            .unwrap();
    // Port 0 instead of the README's fixed ports; everything else as shipped.
    let ours = text
        .replace("listen = \"127.0.0.1:7000\"", "listen = \"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8000\"", &format!("\"{}\"", origin.addr));
    assert_eq!(
        ours.matches("127.0.0.1:0\"").count(),
        1,
        "listen line moved"
    );
    assert!(ours.contains(&origin.addr.to_string()), "origin line moved");
    let dir = tempdir();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, ours).unwrap();
    let mut edge = Proc::spawn(bin(), ["edge", "--config", config.to_str().unwrap()], &[]);
    let edge_addr = edge.wait_listening();

    // The README's quickstart client, with the example's service token.
    let mut tcp = Proc::spawn(
        bin(),
        [
            "tcp",
            "--hostname",
            "http://app.test",
            "--connect-to",
            &edge_addr.to_string(),
            "--url",
            "127.0.0.1:0",
            "--id",
            "quickstart.access",
            "--secret",
            "quickstart-secret-change-me",
        ],
        &[],
    );
    let local = tcp.wait_listening();
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"hello, example\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello, example\n", "edge stderr:\n{}", edge.stderr());
    assert!(dir.path().join("signing-key.pem").exists());
}

/// The first ```sh block after `heading` in the README.
fn readme_block(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = &readme[readme.find(heading).expect("README heading")..];
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = after[start..].find("```").unwrap();
    after[start..start + len].to_string()
}

#[test]
fn the_readme_s_openssl_commands_make_a_certificate_the_tls_example_serves() {
    let dir = tempdir();
    let examples = dir.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    for example in crate::examples::examples() {
        std::fs::copy(&example, examples.join(example.file_name().unwrap())).unwrap();
    }
    // Run the block as a reader would, with this build's `tunnel` first on PATH.
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -eu\n{}", readme_block("### TLS for the edge"));
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README block failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("edge-tls.toml: ok ("));

    // The edge serves that certificate, and a client trusting ca.pem gets through.
    let origin = EchoOrigin::start();
    let text = std::fs::read_to_string(examples.join("edge-tls.toml")).unwrap();
    let ours = text
        .replace("listen = \"0.0.0.0:7443\"", "listen = \"127.0.0.1:0\"")
        .replace("\"127.0.0.1:5432\"", &format!("\"{}\"", origin.addr));
    assert!(ours.contains("127.0.0.1:0\"") && ours.contains(&origin.addr.to_string()));
    std::fs::write(examples.join("edge-tls.toml"), ours).unwrap();
    let config = examples.join("edge-tls.toml");
    let mut edge = Proc::spawn(bin(), ["edge", "--config", config.to_str().unwrap()], &[]);
    let addr = edge.wait_listening();
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "ssh",
        "--hostname",
        "db.example.test",
        "--connect-to",
        &addr.to_string(),
        "--ca-file",
        examples.join("ca.pem").to_str().unwrap(),
        "--id",
        "ci.access",
        "--secret",
        "ci-secret-change-me",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"over wss\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.stdout,
        b"over wss\n",
        "stderr: {}\nedge: {}",
        String::from_utf8_lossy(&out.stderr),
        edge.stderr()
    );
}
