//! A pack named on the command line: a directory, or a git revision of one,
//! `git:REV[:PATH]` (PATH from the repository's root, the whole tree without it).
//!
//! A revision is read with the `git` command of the repository the command runs in, into
//! a private temporary directory; the working tree is never touched. What a tree holds is
//! hostile like any pack: only regular files are written (a symbolic link or a submodule
//! in the pack is refused, so nothing outside it is ever read), each at most the pack
//! reader's 16 MiB, at most [`MAX_FILES`] of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arbiter_core::Pack;
use arbiter_core::pack::file::MAX_FILE_BYTES;

use crate::Failure;

/// Files a pack read from git may hold.
pub const MAX_FILES: usize = 10_000;

/// Bytes all of a pack's files read from git may hold together.
pub const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// A pack ready to load, and what to call it.
#[derive(Debug)]
pub struct Source {
    /// How messages name it: the directory, or `git:REV[:PATH]`.
    pub label: String,
    dir: PathBuf,
    /// Holds a revision's files until the pack is loaded.
    _files: Option<tempfile::TempDir>,
}

impl Source {
    /// `spec`: a directory, or `git:REV[:PATH]`.
    pub fn named(spec: &str) -> Result<Source, Failure> {
        let Some(revision) = spec.strip_prefix("git:") else {
            return Ok(Source {
                label: spec.to_owned(),
                dir: PathBuf::from(spec),
                _files: None,
            });
        };
        let (rev, path) = revision.split_once(':').unwrap_or((revision, ""));
        let bad = |why: String| Failure::Input(format!("{spec}: {why}"));
        if rev.is_empty() || rev.starts_with('-') {
            return Err(bad(
                "name a revision: `git:REV` or `git:REV:PATH`".to_owned()
            ));
        }
        let commit = git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .map_err(|e| {
            bad(format!(
                "`{rev}` is not a revision of this repository ({e})"
            ))
        })?;
        let commit = String::from_utf8_lossy(&commit).trim().to_owned();
        let path = path.trim_matches('/');
        let tree = if path.is_empty() {
            commit.clone()
        } else {
            format!("{commit}:{path}")
        };
        let listing = git(&["ls-tree", "-r", "-z", &tree])
            .map_err(|e| bad(format!("no directory `{path}` at `{rev}` ({e})")))?;
        let files = tempfile::Builder::new()
            .prefix("arbiter-pack-")
            .tempdir()
            .map_err(|e| bad(format!("cannot make a temporary directory: {e}")))?;
        write_tree(&listing, files.path()).map_err(bad)?;
        Ok(Source {
            label: spec.to_owned(),
            dir: files.path().to_owned(),
            _files: Some(files),
        })
    }

    /// The pack, its problems (if any) naming its files under the label.
    pub fn load(&self) -> Result<Arc<Pack>, Failure> {
        match Pack::load(&self.dir) {
            Ok(pack) => {
                for warning in pack.warnings() {
                    eprintln!("warning: {}", self.relabel(&warning.to_string()));
                }
                Ok(Arc::new(pack))
            }
            Err(problems) => Err(Failure::Input(self.relabel(&problems.to_string()))),
        }
    }

    fn relabel(&self, text: &str) -> String {
        if self._files.is_none() {
            return text.to_owned();
        }
        text.replace(&self.dir.display().to_string(), &self.label)
    }
}

/// Runs `git` with `args` in the current directory; its standard output, or why not.
fn git(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(if said.is_empty() {
            format!("git exited with {}", out.status)
        } else {
            said
        })
    }
}

/// One entry of `git ls-tree -r -z`: `<mode> <type> <object>\t<path>`.
struct Entry<'a> {
    mode: &'a str,
    object: &'a str,
    path: &'a str,
}

fn entries(listing: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let text = std::str::from_utf8(listing).map_err(|_| "a file name is not UTF-8".to_owned())?;
    text.split('\0')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (head, path) = entry
                .split_once('\t')
                .ok_or_else(|| format!("cannot read git's listing `{entry}`"))?;
            let mut parts = head.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(mode), Some(_), Some(object)) => Ok(Entry { mode, object, path }),
                _ => Err(format!("cannot read git's listing `{entry}`")),
            }
        })
        .collect()
}

/// Writes the tree's regular files under `root`, read in one `git cat-file --batch`.
fn write_tree(listing: &[u8], root: &Path) -> Result<(), String> {
    let entries = entries(listing)?;
    if entries.len() > MAX_FILES {
        return Err(format!(
            "the pack holds {} files, more than the limit of {MAX_FILES}",
            entries.len()
        ));
    }
    for entry in &entries {
        match entry.mode {
            "100644" | "100755" => {}
            "120000" => {
                return Err(format!(
                    "`{}` is a symbolic link; a pack holds regular files only",
                    entry.path
                ));
            }
            _ => {
                return Err(format!(
                    "`{}` is not a regular file (git mode {})",
                    entry.path, entry.mode
                ));
            }
        }
        let relative = Path::new(entry.path);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!("`{}` is not a path inside the pack", entry.path));
        }
    }
    let mut child = Command::new("git")
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git cat-file has no input")?;
    let stdout = child.stdout.take().ok_or("git cat-file has no output")?;
    // Asked for on a thread of its own, so a full pipe never stops both sides.
    let objects: Vec<String> = entries.iter().map(|e| e.object.to_owned()).collect();
    let asking = std::thread::spawn(move || {
        for object in objects {
            if writeln!(stdin, "{object}").is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(stdout);
    let mut total = 0u64;
    let written = entries.iter().try_for_each(|entry| {
        total += write_blob(&mut reader, entry, root)?;
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "the pack's files hold more than the limit of {MAX_TOTAL_BYTES} bytes"
            ));
        }
        Ok(())
    });
    drop(reader);
    let _ = asking.join();
    let _ = child.kill();
    let _ = child.wait();
    written
}

/// Reads one `<object> blob <size>\n<content>\n` answer and writes it at the entry's path;
/// its size.
fn write_blob(reader: &mut impl BufRead, entry: &Entry<'_>, root: &Path) -> Result<u64, String> {
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .map_err(|e| format!("reading `{}` from git: {e}", entry.path))?;
    let size: u64 = match header.trim_end().split(' ').collect::<Vec<_>>().as_slice() {
        [_, "blob", size] => size
            .parse()
            .map_err(|_| format!("git answered `{}` for `{}`", header.trim_end(), entry.path))?,
        _ => {
            return Err(format!(
                "git answered `{}` for `{}`",
                header.trim_end(),
                entry.path
            ));
        }
    };
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "`{}` is {size} bytes, more than a pack file's limit of {MAX_FILE_BYTES}",
            entry.path
        ));
    }
    let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    reader
        .by_ref()
        .take(size + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("reading `{}` from git: {e}", entry.path))?;
    if content.pop() != Some(b'\n') || content.len() as u64 != size {
        return Err(format!("git's answer for `{}` was cut short", entry.path));
    }
    let path = root.join(entry.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot write `{}`: {e}", entry.path))?;
    }
    std::fs::write(&path, content).map_err(|e| format!("cannot write `{}`: {e}", entry.path))?;
    Ok(size)
}
