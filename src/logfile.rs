//! The `--logfile` writer: appends to a file and can reopen it by path, so that
//! `logrotate` (rename, then SIGHUP) works for `tunnel edge`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A log file opened for appending; [`LogFile::reopen`] switches to whatever file
/// is at its path now. Writes are serialised, one formatted event per `write_all`.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Open (create) `path` for appending; its directory is created when missing,
    /// as `cloudflared` does for `--log-directory`.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopen the path (after a rotation moved the old file away). On failure the
    /// old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.lock() = fresh;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// Reopen `file` on every SIGHUP, for as long as the process runs (Unix; elsewhere
/// there is no SIGHUP and this returns at once).
pub async fn reopen_on_hangup(file: Arc<LogFile>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match file.reopen() {
                Ok(()) => tracing::info!("reopened log file {}", file.path().display()),
                Err(e) => tracing::warn!(
                    "cannot reopen log file {}: {e}; still writing to the old one",
                    file.path().display()
                ),
            }
        }
    }
    #[cfg(not(unix))]
    drop(file);
}
