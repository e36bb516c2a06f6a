//! Files only their owner may read, on every OS the client runs on: the token
//! cache's directory and files. Each function has a Unix and a Windows twin.
//!
//! - Unix (Linux, macOS): directories 0700, files 0600, opened with `O_NOFOLLOW` so
//!   a symbolic link planted in the cache is refused, never written through.
//! - Windows: files live in the user's profile (`%APPDATA%` by default), whose
//!   inherited ACL grants the user, SYSTEM and Administrators only; modes do not
//!   apply. Files are opened with `FILE_FLAG_OPEN_REPARSE_POINT`, so a planted
//!   symbolic link or junction is opened as itself and refused, not followed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
#[cfg(windows)]
use std::os::windows::fs::OpenOptionsExt;

/// `FILE_FLAG_OPEN_REPARSE_POINT` (winbase.h): open a link itself, not its target.
#[cfg(windows)]
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// Create `dir` and its parents; the last one private to the user (0700 on Unix).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(0o700);
    b.create(dir)
}

/// Whether `meta` (of a file or directory) lets users other than the owner in.
/// Always `false` on Windows, where access is the ACL's business.
pub fn open_to_others(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        meta.permissions().mode() & 0o077 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Restrict the directory `dir` to its owner (0700 on Unix; nothing on Windows).
pub fn restrict_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Restrict the open file `f` to its owner (0600 on Unix; nothing on Windows).
pub fn restrict_file(f: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        f.set_permissions(fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        Ok(())
    }
}

/// Open `path` with `opts` (plus: created 0600 on Unix) without following a
/// symbolic link in its last component. A link or anything but a regular file is
/// refused with `InvalidInput` and a message saying what it is.
pub fn open(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    #[cfg(windows)]
    opts.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    let refused = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) => {
            // O_NOFOLLOW fails with ELOOP on a link; name it rather than the errno.
            return match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => Err(refused(LINK)),
                _ => Err(e),
            };
        }
    };
    let meta = file.metadata()?;
    if meta.file_type().is_symlink() {
        return Err(refused(LINK));
    }
    if !meta.is_file() {
        return Err(refused("is not a regular file; remove it"));
    }
    Ok(file)
}

/// The refusal for a symbolic link where a cache file belongs.
const LINK: &str = "is a symbolic link, not a cache file; remove it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("planted");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        #[cfg(windows)]
        if std::os::windows::fs::symlink_file(&victim, &link).is_err() {
            return; // creating links needs a privilege this account lacks
        }
        let err = open(&link, OpenOptions::new().write(true).truncate(true)).unwrap_err();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        // Wine 8 cannot open a link itself and says NotFound; Unix and Windows say
        // what it is.
        #[cfg(unix)]
        {
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        #[cfg(windows)]
        let _ = err;
        // A directory: refused (Windows cannot even open one as a file).
        let err = open(dir.path(), OpenOptions::new().read(true)).unwrap_err();
        #[cfg(unix)]
        assert!(err.to_string().contains("not a regular file"), "{err}");
        #[cfg(windows)]
        let _ = err;
    }

    #[cfg(unix)]
    #[test]
    fn unix_files_and_dirs_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir(&d).unwrap();
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let f = open(
            &d.join("f"),
            OpenOptions::new().write(true).create(true).truncate(false),
        )
        .unwrap();
        assert!(!open_to_others(&f.metadata().unwrap()));
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(open_to_others(&f.metadata().unwrap()));
        restrict_file(&f).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}
