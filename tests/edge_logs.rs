//! What the edge writes at `info`: a summary per `stats_interval` instead of lines
//! per stream, `up`/`down` meaning what they mean to the client (up: client to
//! origin), and a `--logfile` that is reopened on SIGHUP so `logrotate` works.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::origin::EchoOrigin;
use crate::support::{CI_TOKEN, Proc, READY, bin, tempdir};

/// Wait until the file at `path` holds a line containing `needle`; return the line.
fn wait_in_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + READY;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The summary lines' counters added up: (opened, closed, failed, up, down). A
/// stream may open in one interval and close in the next.
fn totals(path: &Path) -> [u64; 5] {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut sum = [0u64; 5];
    for line in text.lines().filter(|l| l.contains("streams opened=")) {
        for (i, key) in ["opened=", "closed=", "failed=", "up=", "down="]
            .iter()
            .enumerate()
        {
            let n = line
                .split(&format!(" {key}"))
                .nth(1)
                .or_else(|| line.split(&format!("streams {key}")).nth(1));
            let n = n
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok());
            sum[i] += n.unwrap_or(0);
        }
    }
    sum
}

/// Wait until the summaries in `path` count `closed` closed streams; return totals.
fn wait_closed(path: &Path, closed: u64) -> [u64; 5] {
    let deadline = Instant::now() + READY;
    loop {
        let t = totals(path);
        if t[1] >= closed {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no summary of {closed} closed stream(s) in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send 10 bytes through the listener; the origin answers "ok" (2 bytes).
fn ten_up_two_down(local: SocketAddr) {
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"0123456789").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"ok");
}

#[cfg(unix)]
#[test]
fn edge_logs_a_summary_per_interval_and_reopens_its_log_file_on_sighup() {
    let origin = EchoOrigin::start_with(|mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = s.write_all(b"ok");
        let _ = s.shutdown(Shutdown::Write);
    });
    let dir = tempdir();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nauth_domain = \"auth.example.test\"\nstats_interval = \"1s\"\n[[apps]]\nhostname = \"db.test\"\norigin = \"{}\"\nallow = [\"service:ci\"]\n{CI_TOKEN}",
            origin.addr
        ),
    )
    .unwrap();
    let log = dir.path().join("edge.log");
    let edge = Proc::spawn(
        bin(),
        [
            "edge",
            "--config",
            config.to_str().unwrap(),
            "--logfile",
            log.to_str().unwrap(),
        ],
        &[],
    );
    let line = wait_in_file(&log, "listening on ");
    let addr = line.split("listening on ").nth(1).unwrap();
    let addr = addr.split_whitespace().next().unwrap().to_string();
    let mut tcp = Proc::spawn(
        bin(),
        [
            "tcp",
            "--hostname",
            "http://db.test",
            "--connect-to",
            &addr,
            "--url",
            "127.0.0.1:0",
            "--id",
            "ci.access",
            "--secret",
            "s3cret",
        ],
        &[],
    );
    let local = tcp.wait_listening();

    ten_up_two_down(local);
    // One stream, 10 bytes up (client to origin) and 2 down, as the client counts.
    assert_eq!(wait_closed(&log, 1), [1, 1, 0, 10, 2]);
    let summary = wait_in_file(&log, "streams opened=");
    assert!(summary.contains(" INFO "), "{summary}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("stream opened") && !text.contains("stream closed"),
        "per-stream lines belong at debug:\n{text}"
    );

    // logrotate: rename, then SIGHUP; the edge writes to a new file at the path.
    let rotated = dir.path().join("edge.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(edge.child.id().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    wait_in_file(&log, "reopened log file");
    let before = totals(&rotated);
    ten_up_two_down(local);
    assert_eq!(wait_closed(&log, 1), [1, 1, 0, 10, 2]);
    assert_eq!(totals(&rotated), before, "the rotated file got new lines");
    drop(tcp);
}
