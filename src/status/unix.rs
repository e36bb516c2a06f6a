//! Unix: one socket per process, `<runtime dir>/<pid>.sock`, 0600 in a 0700
//! directory.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The socket this process serves on, removed when dropped.
pub struct Served {
    path: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn bind() -> std::io::Result<(tokio::net::UnixListener, Served)> {
    let dir = super::runtime_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(format!("{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, Served { path }))
}

pub async fn accept(l: &tokio::net::UnixListener) -> std::io::Result<tokio::net::UnixStream> {
    l.accept().await.map(|(s, _)| s)
}

/// Every status socket's document; sockets of processes that are gone are
/// removed.
pub async fn query_all() -> Vec<Result<Vec<u8>, String>> {
    let dir = super::runtime_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match tokio::net::UnixStream::connect(&p).await {
            Ok(mut s) => {
                let mut doc = Vec::new();
                let r = (&mut s)
                    .take(super::MAX_DOCUMENT as u64)
                    .read_to_end(&mut doc)
                    .await;
                out.push(r.map(|_| doc).map_err(|e| format!("{}: {e}", p.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&p);
            }
            Err(e) => out.push(Err(format!("{}: {e}", p.display()))),
        }
    }
    out
}

pub async fn reply(mut s: tokio::net::UnixStream, doc: &[u8]) {
    let _ = s.write_all(doc).await;
    let _ = s.shutdown().await;
}
