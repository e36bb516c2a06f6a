//! Tests: stock OpenSSH through `tunnel ssh` as a ProxyCommand, against a real sshd
//! behind a real `tunnel edge`. That `ssh` works at all shows `tunnel ssh` writes
//! nothing but bridged bytes to stdout.

use std::process::Output;
use std::time::Duration;

use crate::support::origin::{random_bytes, sha256_hex};
use crate::support::proc::output_with_timeout;
use crate::support::sshd::{Sshd, shell_quote};
use crate::support::{self, CI_TOKEN, Edge};

/// Limit for one `ssh` command.
const SSH_LIMIT: Duration = Duration::from_secs(60);
/// Limit for one 16 MiB `scp` (debug builds on two cores).
const SCP_LIMIT: Duration = Duration::from_secs(180);

/// An edge whose app `ssh.test` leads to `sshd`, reachable by service token `ci`.
fn edge_for(sshd: &Sshd) -> Edge {
    Edge::start(&format!(
        "[[apps]]\nhostname = \"ssh.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
        sshd.addr()
    ))
}

/// The ProxyCommand that reaches `%h` through `edge` with the `ci` service token.
fn proxy_command(edge: &Edge) -> String {
    format!(
        "{} ssh --hostname http://%h --connect-to {} --id ci.access --secret s3cret",
        shell_quote(support::bin().to_str().unwrap()),
        edge.connect_to()
    )
}

/// Panic with everything useful unless `out` succeeded.
fn assert_ok(what: &str, out: &Output, sshd: &Sshd, edge: &Edge) {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {}\nstderr (ssh and tunnel ssh): {}\n--- edge stderr ---\n{}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        edge.proc.stderr(),
        sshd.log()
    );
}

/// The fixture itself: ssh straight to sshd (no tunnel), so a failure here points
/// at the machine's OpenSSH rather than at `tunnel`.
#[test]
fn sshd_fixture_accepts_direct_ssh() {
    let sshd = Sshd::start();
    let mut cmd = sshd.command("ssh", None);
    cmd.arg(format!("{}@127.0.0.1", sshd.user))
        .arg("echo direct");
    let out = output_with_timeout(cmd, SSH_LIMIT);
    assert!(
        out.status.success(),
        "direct ssh failed ({})\nstderr: {}\nsshd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "direct\n");
}

#[test]
fn ssh_runs_a_remote_command_through_the_edge() {
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let edge = edge_for(&sshd);
    let mut cmd = sshd.command("ssh", Some(&proxy_command(&edge)));
    cmd.arg(format!("{}@ssh.test", sshd.user))
        .arg("echo hello; uname -s");
    let out = output_with_timeout(cmd, SSH_LIMIT);
    assert_ok("ssh through tunnel", &out, &sshd, &edge);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nLinux\n");
}

/// 16 MiB up with scp's default SFTP protocol, back with the legacy protocol (`-O`).
#[test]
fn scp_round_trips_16_mib_through_the_edge() {
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let edge = edge_for(&sshd);
    let proxy = proxy_command(&edge);
    let data = random_bytes(16 << 20, 0x5c9);
    let want = sha256_hex(&data);
    let local = support::tempdir();
    let src = local.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();
    let remote = sshd.dir().join("remote.bin");
    let remote_spec = format!("{}@ssh.test:{}", sshd.user, remote.display());

    let mut up = sshd.command("scp", Some(&proxy));
    up.arg("-q").arg(&src).arg(&remote_spec);
    let out = output_with_timeout(up, SCP_LIMIT);
    assert_ok("scp upload (sftp)", &out, &sshd, &edge);
    // sshd runs on this machine, so the uploaded file can be checked in place.
    let uploaded = std::fs::read(&remote).expect("uploaded file exists");
    assert_eq!(uploaded.len(), data.len(), "uploaded size");
    assert_eq!(sha256_hex(&uploaded), want, "uploaded content");

    let back = local.path().join("down.bin");
    let mut down = sshd.command("scp", Some(&proxy));
    down.args(["-q", "-O"]).arg(&remote_spec).arg(&back);
    let out = output_with_timeout(down, SCP_LIMIT);
    assert_ok("scp download (legacy scp)", &out, &sshd, &edge);
    let downloaded = std::fs::read(&back).expect("downloaded file exists");
    assert_eq!(downloaded.len(), data.len(), "downloaded size");
    assert_eq!(sha256_hex(&downloaded), want, "downloaded content");
}

/// Issue 16: the stanza `tunnel ssh-config` prints works when the binary's path has
/// a space and a quote in it (as `~/My Tools/` or `C:\Program Files\` do).
#[test]
fn ssh_config_stanza_works_from_a_path_with_spaces() {
    let sshd = Sshd::start();
    sshd.trust_host("ssh.test");
    let edge = edge_for(&sshd);
    let dir = support::tempdir();
    let odd = dir.path().join("my tools 'n 100%");
    std::fs::create_dir(&odd).unwrap();
    let exe = odd.join("tunnel");
    if std::fs::hard_link(support::bin(), &exe).is_err() {
        std::fs::copy(support::bin(), &exe).unwrap();
    }
    let out = std::process::Command::new(&exe)
        .args(["ssh-config", "--hostname", "http://ssh.test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stanza = String::from_utf8(out.stdout).unwrap();
    let proxy = stanza
        .lines()
        .find_map(|l| l.trim().strip_prefix("ProxyCommand "))
        .unwrap_or_else(|| panic!("no ProxyCommand in {stanza:?}"));
    let proxy = format!(
        "{proxy} --connect-to {} --id ci.access --secret s3cret",
        edge.connect_to()
    );
    let mut cmd = sshd.command("ssh", Some(&proxy));
    cmd.arg(format!("{}@ssh.test", sshd.user))
        .arg("echo quoted");
    let out = output_with_timeout(cmd, SSH_LIMIT);
    assert_ok("ssh through the printed stanza", &out, &sshd, &edge);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "quoted\n");
}
