//! A child process that is killed on drop and whose stderr is captured.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Captured stderr shared with the reader thread.
type Captured = Arc<(Mutex<String>, Condvar)>;

/// A spawned `tunnel` (or other) process. Killed when dropped.
pub struct Proc {
    /// The child; `None` after it was waited for.
    pub child: Child,
    stderr: Captured,
}

impl Proc {
    /// Spawn `program args` with `env` added, stdin and stdout null, stderr captured.
    pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I, env: &[(&str, &str)]) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn_cmd(cmd)
    }

    /// Spawn a prepared command; its stderr is captured (stdin/stdout as configured).
    pub fn spawn_cmd(mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn child");
        let pipe = child.stderr.take().unwrap();
        let stderr: Captured = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let (lock, cv) = &*sink;
                lock.lock().unwrap().push_str(&line);
                cv.notify_all();
                line.clear();
            }
        });
        Proc { child, stderr }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        // A panic in `wait_for` poisons the lock; the text is still what we want.
        let text = self.stderr.0.lock();
        text.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until stderr contains `needle` (returns the line holding it); panic with
    /// the captured stderr after `timeout` or if the child exits first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.stderr;
        let mut text = lock.lock().unwrap();
        loop {
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("timed out waiting for {needle:?} on stderr:\n{}", *text);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                drop(text);
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "child exited ({status}) before {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            text = cv.wait_timeout(text, wait).unwrap().0;
        }
    }

    /// Wait for the `listening on ADDR` line and return ADDR.
    pub fn wait_listening(&mut self) -> SocketAddr {
        self.nth_listening(0)
    }

    /// Wait for the `n`th (0-based) `listening on ADDR` line and return its ADDR.
    pub fn nth_listening(&mut self, n: usize) -> SocketAddr {
        self.nth_listening_ending(n, "")
    }

    /// Wait for the `n`th (0-based) `listening on ADDR` line that ends with `tag`
    /// (`tunnel up` ends each with ` (tunnel NAME)`) and return its ADDR.
    pub fn nth_listening_ending(&mut self, n: usize, tag: &str) -> SocketAddr {
        let deadline = Instant::now() + super::READY;
        loop {
            self.wait_for(
                "listening on ",
                deadline.saturating_duration_since(Instant::now()),
            );
            let found: Vec<SocketAddr> = self
                .stderr()
                .lines()
                .filter(|l| l.ends_with(tag))
                .filter_map(|l| l.split("listening on ").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .filter_map(|a| a.parse().ok())
                .collect();
            if let Some(addr) = found.get(n) {
                return *addr;
            }
            if Instant::now() >= deadline {
                panic!("no listening line #{n}{tag}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the child to exit within `timeout`; panic (showing stderr) otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "child did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send SIGTERM (as a service manager would).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send the signal named `name` (`HUP`, `STOP`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of child {} ---\n{}",
                self.child.id(),
                self.stderr()
            );
        }
    }
}

/// Run `cmd` to completion (stdout and stderr captured), killing it after `timeout`.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let id = child.id();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(id.to_string())
            .status();
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}
