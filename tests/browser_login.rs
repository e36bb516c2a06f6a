//! The full browser login in real headless Chromium (Debian's `chromium`, driven by
//! `tests/fixtures/chromium_hook.py` through chromedriver): `tunnel tcp` with no
//! token, a client connects, the browser logs in on the edge's page (after checking
//! the login code it shows is the one the CLI printed), bytes flow and the token is
//! cached.

use std::path::Path;

use crate::login::{World, echo};

#[test]
fn tcp_with_no_token_logs_in_through_headless_chromium() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} not found: run scripts/test.sh, which installs chromium and chromium-driver"
        );
    }
    let w = World::start("1h");
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chromium_hook.py");
    let (tcp, local) = w.tcp_with_browser("http://db.test", &hook);
    assert_eq!(
        echo(local, b"through a real browser login"),
        b"through a real browser login"
    );
    assert_eq!(w.logins(), 1);
    // The browser writes what its final page said once it has read it; the tunnel
    // may already have its token by then.
    let result = w.hook_log.with_extension("log.result");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let read = || std::fs::read_to_string(&result).unwrap_or_default();
    while !read().contains("Logged in") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let page = read();
    assert!(
        page.contains("Logged in to db.test as alice@example.test"),
        "final page: {page:?}"
    );
    // The page showed the code the CLI printed next to the login URL.
    let code = page
        .lines()
        .find_map(|l| l.strip_prefix("code "))
        .expect("the hook read a code on the page");
    assert_eq!(code.len(), 9, "{code:?}");
    assert!(
        tcp.stderr().contains(&format!("code {code};")),
        "the CLI printed another code than the page's {code}: {}",
        tcp.stderr()
    );
    assert_eq!(w.token_files().len(), 2, "app and org token cached");
}
