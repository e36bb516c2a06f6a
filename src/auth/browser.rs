//! Opening the login page: `BROWSER` whenever it is set (even with no display: it
//! is how people and tests plug in their own), else the desktop's own way through
//! the `open` crate (Windows: the shell, never `cmd /c start`, which mangles `&` in
//! URLs; macOS: `open`; Linux and BSD: `xdg-open` and friends, only with a
//! display). The caller always prints the URL on stderr too, so it works over SSH.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started browser command may take to fail before it counts as opened.
const SETTLE: Duration = Duration::from_secs(2);

/// Try to open `url`; `true` when a browser command was started successfully.
pub fn open(url: &str) -> bool {
    if let Some(list) = std::env::var_os("BROWSER") {
        let list = list.to_string_lossy().to_string();
        return browser_commands(&list, cfg!(windows))
            .iter()
            .any(|cmd| run(&command_words(cmd, url)));
    }
    let has_display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    desktop_can_open(std::env::consts::OS, has_display)
        && open::that_detached_with_timeout(url, SETTLE).is_ok()
}

/// Whether the desktop's opener may be tried on `os`: always on Windows and macOS;
/// elsewhere only with a display, since `xdg-open` without one may start a text
/// browser on the terminal that `tunnel ssh` is using.
fn desktop_can_open(os: &str, has_display: bool) -> bool {
    matches!(os, "windows" | "macos") || has_display
}

/// The commands in a `BROWSER` value: as Python's `webbrowser`, a list separated by
/// the OS's path separator (`;` on Windows, where `:` is part of `C:\...`; `:`
/// elsewhere).
fn browser_commands(list: &str, windows: bool) -> Vec<&str> {
    list.split(if windows { ';' } else { ':' })
        .filter(|c| !c.trim().is_empty())
        .collect()
}

/// The program and arguments of one `BROWSER` command for `url`: words split on
/// white space, a `"..."` or `'...'` group is one word (for `C:\Program Files\...`);
/// `%s` is replaced by the URL, which is appended when no word holds `%s`.
fn command_words(command: &str, url: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_default().push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    if words.iter().any(|w| w.contains("%s")) {
        words.iter_mut().for_each(|w| *w = w.replace("%s", url));
    } else if !words.is_empty() {
        words.push(url.to_string());
    }
    words
}

/// Start `words` (program, then arguments) with no stdio.
fn run(words: &[String]) -> bool {
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    // Openers return at once; a browser run directly may stay up until closed, so
    // give it a moment to fail, then leave it running (reaped by a thread).
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
    std::thread::spawn(move || child.wait());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://a.test/cdn-cgi/access/cli?token=x&aud=y";

    #[test]
    fn browser_lists_split_on_the_os_path_separator() {
        assert_eq!(
            browser_commands("firefox:chromium %s:", false),
            ["firefox", "chromium %s"]
        );
        assert_eq!(
            browser_commands(
                r#""C:\Program Files\Mozilla Firefox\firefox.exe";edge"#,
                true
            ),
            [r#""C:\Program Files\Mozilla Firefox\firefox.exe""#, "edge"]
        );
    }

    #[test]
    fn command_words_keep_quoted_paths_and_the_url_whole() {
        assert_eq!(command_words("firefox", URL), ["firefox", URL]);
        assert_eq!(
            command_words("chromium --new-window %s", URL),
            ["chromium", "--new-window", URL]
        );
        assert_eq!(
            command_words(
                r#""C:\Program Files\Mozilla Firefox\firefox.exe" -new-tab"#,
                URL
            ),
            [
                r"C:\Program Files\Mozilla Firefox\firefox.exe",
                "-new-tab",
                URL
            ]
        );
        assert_eq!(
            command_words("'/Applications/My Browser.app/x' '%s'", URL),
            ["/Applications/My Browser.app/x", URL]
        );
        assert!(command_words("  ", URL).is_empty());
    }

    #[test]
    fn the_desktop_opener_needs_a_display_only_where_xdg_open_is_used() {
        assert!(desktop_can_open("windows", false));
        assert!(desktop_can_open("macos", false));
        assert!(!desktop_can_open("linux", false));
        assert!(desktop_can_open("linux", true));
        assert!(!desktop_can_open("freebsd", false));
    }
}
