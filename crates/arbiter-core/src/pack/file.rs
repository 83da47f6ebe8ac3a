//! Reading the files a pack (or a command) names, safely: only regular files, and never
//! more than [`MAX_FILE_BYTES`]. Without this, a policy file that is a symlink to
//! `/dev/zero` is read until memory runs out, and a FIFO blocks the loader forever.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// The largest file arbiter reads from a pack (and the longest line of a `--requests`
/// file): 16 MiB, far beyond any real schema, entity store or policy file, small enough
/// that reading it cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a file was not read. Its message does not name the file: the caller places it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    /// A directory, a FIFO, a device, a socket: only regular files are read.
    #[error("not a regular file (it is a {kind}): only regular files are read")]
    NotRegular {
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("larger than the limit of {limit} bytes (16 MiB)")]
    TooLarge {
        /// The limit, [`MAX_FILE_BYTES`].
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("cannot read: not UTF-8 text")]
    NotUtf8,
}

/// Opens `path` for reading if it is a regular file (a symlink to one is followed).
///
/// The check is on the opened handle, so the file cannot be swapped between a check and
/// the open. On unix the open is non-blocking: opening a FIFO for reading would otherwise
/// wait for a writer before the check could refuse it. Reads of a regular file never
/// block, so the flag changes nothing for the files that are accepted.
pub fn open(path: &Path) -> Result<File, FileError> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(FileError::NotRegular {
            kind: describe(kind),
        });
    }
    Ok(file)
}

/// Reads the regular file at `path` as UTF-8 text, refusing one larger than
/// [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> Result<String, FileError> {
    let file = open(path)?;
    let too_large = FileError::TooLarge {
        limit: MAX_FILE_BYTES,
    };
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Err(too_large);
    }
    // The length can change after the check (a file being appended to): the read is
    // bounded on its own, one byte past the limit to tell "at the limit" from "over it".
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(too_large);
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8)
}

/// Whether anything (of any type, a dangling symlink included) is at `path`: what is
/// there is then read with [`read`], which reports what is wrong with it, rather than
/// being taken as absent.
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn describe(kind: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_char_device() {
            return "character device";
        }
        if kind.is_block_device() {
            return "block device";
        }
        if kind.is_socket() {
            return "socket";
        }
    }
    if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_and_a_symlink_to_one_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a.cedar");
        std::fs::write(&target, "text").expect("write");
        assert_eq!(read(&target).expect("read"), "text");
        #[cfg(unix)]
        {
            let link = dir.path().join("b.cedar");
            std::os::unix::fs::symlink(&target, &link).expect("symlink");
            assert_eq!(read(&link).expect("read"), "text");
        }
    }

    #[test]
    fn a_directory_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read(dir.path()).expect_err("a directory");
        assert_eq!(
            err.to_string(),
            "not a regular file (it is a directory): only regular files are read"
        );
    }

    #[test]
    fn a_file_one_byte_over_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.json");
        let file = File::create(&path).expect("create");
        // Sparse: no 16 MiB written to disk.
        file.set_len(MAX_FILE_BYTES).expect("set_len");
        assert_eq!(
            read(&path).expect("at the limit").len() as u64,
            MAX_FILE_BYTES
        );
        file.set_len(MAX_FILE_BYTES + 1).expect("set_len");
        assert_eq!(
            read(&path).expect_err("over the limit").to_string(),
            "larger than the limit of 16777216 bytes (16 MiB)"
        );
    }
}
