//! Opening the login page: `BROWSER` whenever it is set (even with no display: it
//! is how people and tests plug in their own), else the desktop's opener. The URL is
//! always printed on stderr too, so it works over SSH.

use std::process::{Command, Stdio};

/// Try to open `url`; `true` when a browser command was started successfully.
pub fn open(url: &str) -> bool {
    if let Some(list) = std::env::var_os("BROWSER") {
        let list = list.to_string_lossy().to_string();
        // As Python's webbrowser: a `:`-separated list; `%s` is the URL, else appended.
        return list
            .split(':')
            .filter(|c| !c.trim().is_empty())
            .any(|cmd| run(cmd, url));
    }
    let has_display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if has_display {
        Some("xdg-open")
    } else {
        None
    };
    opener.is_some_and(|o| run(o, url))
}

fn run(command: &str, url: &str) -> bool {
    let mut words = command
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if words.is_empty() {
        return false;
    }
    if words.iter().any(|w| w.contains("%s")) {
        words.iter_mut().for_each(|w| *w = w.replace("%s", url));
    } else {
        words.push(url.to_string());
    }
    let child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    // Openers return at once; a browser run directly may stay up until closed, so
    // give it a moment to fail, then leave it running (reaped by a thread).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
    std::thread::spawn(move || child.wait());
    true
}
