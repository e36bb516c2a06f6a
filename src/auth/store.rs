//! The token cache (README: "Logging in"): one directory (0700), app tokens in
//! `<app_hostname>-<aud>-token`, org tokens in `<auth_domain>-org-token`, each the
//! compact JWT, 0600, written atomically. A login in progress holds an OS file lock
//! on `<file>.lock` (`File::try_lock`: `flock` on Unix, `LockFileEx` on Windows), which
//! the OS releases when its holder exits or dies, on every platform; the lock file
//! itself stays (empty and unlocked), since deleting a lock file others may have open
//! would let two processes hold "the" lock. `<file>.url` holds the login URL for other
//! processes to show. No file is written through a symbolic link (see `auth/private.rs`).
//!
//! The file names match `cloudflared`'s, so `--token-dir ~/.cloudflared` (on Windows
//! `%USERPROFILE%\.cloudflared`) shares its cache.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::jwt::{self, TokenClaims};
use super::private;
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
    /// The default directory: `<config dir>/tunnel`, the OS's per-user config
    /// directory: `~/.config/tunnel` on Linux (`$XDG_CONFIG_HOME`),
    /// `~/Library/Application Support/tunnel` on macOS, `%APPDATA%\tunnel` on Windows.
    pub fn default_dir() -> PathBuf {
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("tunnel")
    }

    /// Open (creating, private to the user) the cache at `dir`. A directory others
    /// can read is tightened to 0700 on Unix, with a warning.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let err = |what: String| StoreError {
            path: dir.to_path_buf(),
            what,
        };
        if !dir.exists() {
            private::create_dir(dir).map_err(|e| err(format!("cannot create: {e}")))?;
        }
        let meta = fs::metadata(dir).map_err(|e| err(format!("cannot read: {e}")))?;
        if !meta.is_dir() {
            return Err(err("is not a directory; pass another --token-dir".into()));
        }
        if private::open_to_others(&meta) {
            warn!(
                "token cache {} was readable by others; setting it to 0700",
                dir.display()
            );
            private::restrict_dir(dir).map_err(|e| err(format!("cannot restrict to 0700: {e}")))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
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
        let mut file = match private::open(path, fs::OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(err(e.to_string()));
            }
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if private::open_to_others(&meta) {
            warn!(
                "token file {} was readable by others; setting it to 0600",
                path.display()
            );
            private::restrict_file(&file)
                .map_err(|e| err(format!("cannot restrict to 0600: {e}")))?;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        drop(file);
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
        write_atomic(&self.dir, path, token.as_bytes())
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

    /// Try to take the login lock for `token_path`: `Ok(None)` when another
    /// process (or another lock in this one) holds it. The OS releases it when its
    /// holder exits, however it exits.
    pub fn try_lock(&self, token_path: &Path) -> Result<Option<LoginLock>, StoreError> {
        let path = with_suffix(token_path, ".lock");
        let err = |what: String| StoreError {
            path: path.clone(),
            what,
        };
        let mut opts = fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        let file = private::open(&path, &mut opts).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => err(e.to_string()),
            _ => err(format!("cannot open the login lock: {e}")),
        })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LoginLock {
                _file: file,
                dir: self.dir.clone(),
                url: with_suffix(token_path, ".url"),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(err(format!("cannot lock: {e}"))),
        }
    }

    /// The login URL another process is showing for `token_path`, if any.
    pub fn login_url(&self, token_path: &Path) -> Option<String> {
        let mut f = private::open(
            &with_suffix(token_path, ".url"),
            fs::OpenOptions::new().read(true),
        )
        .ok()?;
        let mut url = String::new();
        f.read_to_string(&mut url).ok()?;
        Some(url.trim().to_string())
    }
}

/// A held login lock (an OS lock on the open `.lock` file, released when this is
/// dropped or the process ends); dropping it also removes the URL file.
#[derive(Debug)]
pub struct LoginLock {
    _file: File,
    dir: PathBuf,
    url: PathBuf,
}

impl LoginLock {
    /// Publish the login URL for other processes waiting on this login (atomically,
    /// never through a link planted at the `.url` path).
    pub fn publish_url(&self, url: &str) {
        if let Err(e) = write_atomic(&self.dir, &self.url, url.as_bytes()) {
            warn!("{e}");
        }
    }
}

impl Drop for LoginLock {
    fn drop(&mut self) {
        // Before the lock is released (when `_file` drops after this).
        let _ = fs::remove_file(&self.url);
    }
}

/// Write `bytes` to `path` through a temporary file in `dir` (created exclusively,
/// 0600) renamed over it: atomic, and a symbolic link at `path` is replaced, never
/// followed.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |what: String| StoreError {
        path: path.to_path_buf(),
        what,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-token-")
        .tempfile_in(dir)
        .map_err(|e| err(format!("cannot create a temporary file: {e}")))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| err(format!("cannot write: {e}")))?;
    tmp.persist(path)
        .map_err(|e| err(format!("cannot save: {}", e.error)))?;
    Ok(())
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
        let p = store.app_token_path("db.test", "aud1");
        store
            .write(&p, &token(jwt::now_secs() + 60, "aud1"))
            .unwrap();
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
    }

    #[test]
    #[cfg(unix)]
    fn unix_modes_are_0700_and_0600_and_loose_ones_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        assert_eq!(mode(&store.dir), 0o700);
        let p = store.app_token_path("db.test", "aud1");
        store
            .write(&p, &token(jwt::now_secs() + 60, "aud1"))
            .unwrap();
        assert_eq!(mode(&p), 0o600);
        let lock = store.try_lock(&p).unwrap().unwrap();
        lock.publish_url("https://login");
        assert_eq!(mode(&with_suffix(&p, ".lock")), 0o600);
        assert_eq!(mode(&with_suffix(&p, ".url")), 0o600);
        // World-readable: tightened.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(store.read(&p, Some("aud1")).unwrap().is_some());
        assert_eq!(mode(&p), 0o600);
        fs::set_permissions(&store.dir, fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::open(&store.dir).unwrap();
        assert_eq!(mode(&store.dir), 0o700);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let p = store.app_token_path("db.test", "aud1");
        let lock = store.try_lock(&p).unwrap().expect("first lock");
        lock.publish_url("https://login");
        assert_eq!(store.login_url(&p).as_deref(), Some("https://login"));
        assert!(
            store.try_lock(&p).unwrap().is_none(),
            "held by our first lock"
        );
        drop(lock);
        assert!(store.login_url(&p).is_none());
        assert!(store.try_lock(&p).unwrap().is_some(), "released on drop");
    }

    /// Issue 10 item 4: a link planted at any cache path is replaced or refused,
    /// never written through.
    #[cfg(unix)]
    #[test]
    fn issue_10_no_cache_file_is_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let p = store.app_token_path("db.test", "aud1");
        let plant = |suffix: &str| {
            let link = with_suffix(&p, suffix);
            let _ = fs::remove_file(&link);
            #[cfg(unix)]
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            link
        };
        // The URL file: replaced by a regular file, the link's target untouched.
        plant(".url");
        let lock = store.try_lock(&p).unwrap().unwrap();
        lock.publish_url("https://login");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(with_suffix(&p, ".url"))
                .unwrap()
                .is_symlink()
        );
        drop(lock);
        // The token file: replaced, and a planted one is refused on read.
        let token = token(jwt::now_secs() + 60, "aud1");
        plant("");
        let e = store.read(&p, None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        store.write(&p, &token).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&p).unwrap(), token);
        // The lock file: refused with a message saying what to do.
        plant(".lock");
        let e = store.try_lock(&p).unwrap_err();
        assert!(
            e.to_string().contains("symbolic link") && e.to_string().contains("remove it"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }
}
