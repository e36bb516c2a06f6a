//! The token cache (README: "Logging in"): one directory (0700), app tokens in
//! `<app_hostname>-<aud>-token`, org tokens in `<auth_domain>-org-token`, each the
//! compact JWT, 0600, written atomically. `<file>.lock` guards a login in progress
//! (created exclusively; holds the owner's pid and start time; a dead owner's lock is
//! reclaimed) and `<file>.url` holds its login URL for other processes to show.
//!
//! The file names match `cloudflared`'s, so `--token-dir ~/.cloudflared` shares its
//! cache.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::jwt::{self, TokenClaims};
use crate::secret::Secret;

/// A cache operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("token cache {path}: {what}")]
pub struct StoreError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong and what to do.
    pub what: String,
}

/// The token cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A valid cached token and what it says.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The token.
    pub token: Secret,
    /// Its claims.
    pub claims: TokenClaims,
    /// The file it came from.
    pub path: PathBuf,
}

impl Store {
    /// The default directory: `<config dir>/tunnel` (e.g. `~/.config/tunnel`).
    pub fn default_dir() -> PathBuf {
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tunnel")
    }

    /// Open (creating, mode 0700) the cache at `dir`. A directory others can read
    /// is tightened to 0700, with a warning.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let err = |what: String| StoreError {
            path: dir.to_path_buf(),
            what,
        };
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err(format!("cannot create: {e}")))?;
        }
        let meta = fs::metadata(dir).map_err(|e| err(format!("cannot read: {e}")))?;
        if !meta.is_dir() {
            return Err(err("is not a directory; pass another --token-dir".into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                "token cache {} was readable by others; setting it to 0700",
                dir.display()
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("cannot restrict to 0700: {e}")))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the app token file for `app_hostname` (the pattern) and `aud`.
    pub fn app_token_path(&self, app_hostname: &str, aud: &str) -> PathBuf {
        self.dir
            .join(sanitize(&format!("{app_hostname}-{aud}-token")))
    }

    /// Path of the org token file for `auth_domain`.
    pub fn org_token_path(&self, auth_domain: &str) -> PathBuf {
        self.dir.join(sanitize(&format!("{auth_domain}-org-token")))
    }

    /// Read the token at `path` if it is usable: a JWT whose `exp` is in the future
    /// and (when `aud` is given) whose `aud` contains it. An unusable file is deleted
    /// (with a warning when it was corrupt); a file others can read is tightened.
    pub fn read(&self, path: &Path, aud: Option<&str>) -> Result<Option<Cached>, StoreError> {
        let err = |what: String| StoreError {
            path: path.to_path_buf(),
            what,
        };
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        if !meta.is_file() {
            return Err(err("is not a regular file; remove it".into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                "token file {} was readable by others; setting it to 0600",
                path.display()
            );
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("cannot restrict to 0600: {e}")))?;
        }
        let text = fs::read_to_string(path).unwrap_or_default();
        let token = text.trim();
        let claims = match jwt::claims(token) {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    "token file {} is unusable ({e}); removing it",
                    path.display()
                );
                self.remove(path)?;
                return Ok(None);
            }
        };
        let fresh = claims.exp > jwt::now_secs();
        let for_app = aud.is_none_or(|a| claims.aud.contains(a));
        if !fresh || !for_app {
            self.remove(path)?;
            return Ok(None);
        }
        Ok(Some(Cached {
            token: Secret::new(token),
            claims,
            path: path.to_path_buf(),
        }))
    }

    /// Write `token` to `path`: mode 0600, atomically (a crash leaves the old file
    /// or the new one, never half of one).
    pub fn write(&self, path: &Path, token: &str) -> Result<(), StoreError> {
        let err = |what: String| StoreError {
            path: path.to_path_buf(),
            what,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-token-")
            .tempfile_in(&self.dir)
            .map_err(|e| err(format!("cannot create a temporary file: {e}")))?;
        tmp.write_all(token.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| err(format!("cannot write: {e}")))?;
        tmp.persist(path)
            .map_err(|e| err(format!("cannot save: {}", e.error)))?;
        Ok(())
    }

    /// Delete `path` if present.
    pub fn remove(&self, path: &Path) -> Result<(), StoreError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError {
                path: path.to_path_buf(),
                what: format!("cannot delete: {e}"),
            }),
        }
    }

    /// Every cached token file (app and org), for `logout --all`.
    pub fn all_token_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError {
            path: self.dir.clone(),
            what: format!("cannot list: {e}"),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("-token"))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Try to take the login lock for `token_path`. `Ok(None)` when a live process
    /// holds it; a lock left by a dead process is reclaimed.
    pub fn try_lock(&self, token_path: &Path) -> Result<Option<LoginLock>, StoreError> {
        let path = with_suffix(token_path, ".lock");
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let me = std::process::id();
                    let _ = writeln!(f, "{me} {}", process_start(me).unwrap_or(0));
                    return Ok(Some(LoginLock {
                        lock: path,
                        url: with_suffix(token_path, ".url"),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if lock_owner_alive(&path) {
                        return Ok(None);
                    }
                    warn!(
                        "reclaiming login lock {} left by a process that is gone",
                        path.display()
                    );
                    self.remove(&path)?;
                }
                Err(e) => {
                    return Err(StoreError {
                        path,
                        what: format!("cannot create the login lock: {e}"),
                    });
                }
            }
        }
        Ok(None)
    }

    /// The login URL another process is showing for `token_path`, if any.
    pub fn login_url(&self, token_path: &Path) -> Option<String> {
        fs::read_to_string(with_suffix(token_path, ".url"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Whether a live process holds the login lock for `token_path`.
    pub fn locked(&self, token_path: &Path) -> bool {
        let path = with_suffix(token_path, ".lock");
        path.exists() && lock_owner_alive(&path)
    }
}

/// A held login lock; dropping it removes the lock and URL files.
#[derive(Debug)]
pub struct LoginLock {
    lock: PathBuf,
    url: PathBuf,
}

impl LoginLock {
    /// Publish the login URL for other processes waiting on this login.
    pub fn publish_url(&self, url: &str) {
        let _ = fs::write(&self.url, url);
    }
}

impl Drop for LoginLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.url);
        let _ = fs::remove_file(&self.lock);
    }
}

/// `/` and `*` in a name become `-`, as `cloudflared` does.
fn sanitize(name: &str) -> String {
    name.replace(['/', '*'], "-")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The owner recorded in a lock file is alive (same pid, same start time). An
/// unreadable lock counts as alive, so we never steal one we cannot judge.
fn lock_owner_alive(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string(path) else {
        return true;
    };
    let mut parts = text.split_whitespace();
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let start = parts.next().and_then(|s| s.parse::<u64>().ok());
    match (pid, start) {
        (Some(pid), Some(start)) => process_start(pid).is_some_and(|s| start == 0 || s == start),
        // Being written right now by its creator.
        _ => true,
    }
}

/// A process's start time (clock ticks since boot, from /proc), or `None` if it
/// does not exist.
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn token(exp: u64, aud: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(&format!(
                r#"{{"aud":["{aud}"],"exp":{exp},"email":"a@b.test"}}"#
            ))
        )
    }

    #[test]
    fn names_match_cloudflared() {
        let s = Store {
            dir: PathBuf::from("/c"),
        };
        assert_eq!(
            s.app_token_path("*.x.test/p", "aud1"),
            Path::new("/c/-.x.test-p-aud1-token")
        );
        assert_eq!(
            s.org_token_path("team.cloudflareaccess.com"),
            Path::new("/c/team.cloudflareaccess.com-org-token")
        );
    }

    #[test]
    fn write_read_and_reject() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let p = store.app_token_path("db.test", "aud1");
        store
            .write(&p, &token(jwt::now_secs() + 60, "aud1"))
            .unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(store.read(&p, Some("aud1")).unwrap().is_some());
        // Wrong aud: deleted.
        assert!(store.read(&p, Some("aud2")).unwrap().is_none());
        assert!(!p.exists());
        // Expired: deleted.
        store
            .write(&p, &token(jwt::now_secs() - 1, "aud1"))
            .unwrap();
        assert!(store.read(&p, Some("aud1")).unwrap().is_none());
        // Corrupt or truncated: deleted, no panic.
        for junk in ["", "garbage", "a.b", "\u{0}\u{1}"] {
            fs::write(&p, junk).unwrap();
            assert!(store.read(&p, None).unwrap().is_none());
        }
        // World-readable: tightened.
        store
            .write(&p, &token(jwt::now_secs() + 60, "aud1"))
            .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(store.read(&p, Some("aud1")).unwrap().is_some());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn locks_are_exclusive_and_dead_owners_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = store.app_token_path("db.test", "aud1");
        let lock = store.try_lock(&p).unwrap().expect("first lock");
        lock.publish_url("https://login");
        assert_eq!(store.login_url(&p).as_deref(), Some("https://login"));
        assert!(
            store.try_lock(&p).unwrap().is_none(),
            "held by a live process (us)"
        );
        drop(lock);
        assert!(store.login_url(&p).is_none());
        // A lock whose owner is gone (pid that cannot exist).
        fs::write(with_suffix(&p, ".lock"), "4194304999 1\n").unwrap();
        assert!(store.try_lock(&p).unwrap().is_some());
    }
}
