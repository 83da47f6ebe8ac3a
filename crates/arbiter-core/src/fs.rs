//! Writing a file so that no reader ever sees half of it, and a crash leaves the old file
//! or the new one: arbiter's signing keys, its masking key, the admin token and the pack
//! files a promotion edits are all written here, one way.
//!
//! The bytes go to a temporary file in the target's own directory (a rename is atomic only
//! within one file system), created with the final mode before any byte is written, synced,
//! then renamed over the target, and the directory synced so the rename survives a crash.
//! Temporary files are named `.<name>.<random>.tmp`: hidden, and never ending in the
//! target's extension, so a folder scan (`*.json` keys, `*.cedar` policies) skips one a
//! crash left behind.

use std::fs::Permissions;
use std::io::{self, Write as _};
use std::path::Path;

/// The permissions a written file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMode {
    /// Readable and writable by its owner only (0600): keys and tokens. The temporary file
    /// has this mode from its creation, so no other user can open it while it fills.
    Private,
    /// These permissions, exactly: those of the file being replaced, so an edit keeps
    /// them. Set before the first byte is written.
    Same(Permissions),
    /// What a new file gets from the process's umask (0666 less the umask), as a file
    /// created with `File::create` would.
    Default,
}

/// What to do when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Replace it atomically.
    Replace,
    /// Leave it and fail with [`io::ErrorKind::AlreadyExists`]: of two processes creating
    /// the same file, exactly one wins and the other can read what the winner wrote.
    Fail,
}

/// Writes `bytes` to `path` atomically, with `mode`, replacing an existing file or not as
/// `if_exists` says. On error the target is as it was and no temporary file is left.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: FileMode,
    if_exists: IfExists,
) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Given to open(2): the umask can only narrow it.
        let create = match mode {
            FileMode::Private | FileMode::Same(_) => 0o600,
            FileMode::Default => 0o666,
        };
        builder.permissions(Permissions::from_mode(create));
    }
    let mut temp = builder.tempfile_in(dir)?;
    if let FileMode::Same(permissions) = mode {
        temp.as_file().set_permissions(permissions)?;
    }
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    // On failure the temporary file comes back in the error, and is deleted with it.
    match if_exists {
        IfExists::Replace => temp.persist(path).map_err(|e| e.error)?,
        IfExists::Fail => temp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    sync_dir(dir)
}

/// Makes the renames, creations and deletions in `dir` durable (a no-op where directories
/// cannot be opened, outside Unix).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::fs::{self, File};
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Every name in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_private_file_is_0600_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_atomic(&path, b"one", FileMode::Private, IfExists::Fail).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(dir.path()), ["secret.key"]);
    }

    #[test]
    fn replace_swaps_the_whole_file_and_takes_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        fs::write(&path, "old text, longer than the new").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let before = fs::metadata(&path).unwrap();
        write_atomic(&path, b"new", FileMode::Private, IfExists::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        // A rename, not a rewrite in place: a reader holding the old file keeps the old
        // text, and the path names a new inode.
        use std::os::unix::fs::MetadataExt as _;
        assert_ne!(fs::metadata(&path).unwrap().ino(), before.ino());
        assert_eq!(names(dir.path()), ["k.json"]);
    }

    #[test]
    fn a_reader_of_the_old_file_keeps_reading_the_old_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.cedar");
        fs::write(&path, "old").unwrap();
        let held = File::open(&path).unwrap();
        write_atomic(&path, b"new", FileMode::Default, IfExists::Replace).unwrap();
        let mut old = String::new();
        io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn same_keeps_the_permissions_given_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.cedar");
        fs::write(&path, "old").unwrap();
        // Group-writable: wider than a usual umask lets a new file be.
        fs::set_permissions(&path, Permissions::from_mode(0o664)).unwrap();
        let permissions = fs::metadata(&path).unwrap().permissions();
        write_atomic(
            &path,
            b"new",
            FileMode::Same(permissions),
            IfExists::Replace,
        )
        .unwrap();
        assert_eq!(mode(&path), 0o664);
    }

    #[test]
    fn default_is_never_wider_than_0666() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.cedar");
        write_atomic(&path, b"text", FileMode::Default, IfExists::Fail).unwrap();
        assert_eq!(mode(&path) & !0o666, 0);
        assert_eq!(mode(&path) & 0o600, 0o600);
    }

    #[test]
    fn fail_leaves_an_existing_file_and_says_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.key");
        write_atomic(&path, b"first", FileMode::Private, IfExists::Fail).unwrap();
        let error = write_atomic(&path, b"second", FileMode::Private, IfExists::Fail)
            .expect_err("the file exists");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["mask.key"]);
    }

    #[test]
    fn of_two_racing_creators_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    scope.spawn(move || {
                        write_atomic(path, &[i; 64], FileMode::Private, IfExists::Fail)
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let won: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        for result in &results {
            if let Err(e) = result {
                assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
            }
        }
        // The file holds the winner's bytes, whole.
        assert_eq!(fs::read(&path).unwrap(), [won[0] as u8; 64]);
        assert_eq!(names(dir.path()), ["admin.token"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was written.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        assert!(write_atomic(&path, b"x", FileMode::Private, IfExists::Replace).is_err());
        assert_eq!(names(dir.path()), ["taken"]);
        // No directory to write in.
        let missing = dir.path().join("no/such/file");
        assert_eq!(
            write_atomic(&missing, b"x", FileMode::Private, IfExists::Replace)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert_eq!(
            write_atomic(Path::new("/"), b"x", FileMode::Private, IfExists::Replace)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
