//! Who may call what (DESIGN §5): admin tokens, with names, for everything but decisions
//! and probes; PEP tokens, stored as hashes in the pack, for decision endpoints.
//! Comparisons are on SHA-256 digests, in constant time.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use arbiter_core::fs::{FileMode, IfExists, write_atomic};
use arbiter_core::pack::file::{self, FileError};
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token from `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Named admin tokens.
#[derive(Debug, Clone)]
pub struct AdminTokens {
    tokens: Vec<(String, [u8; 32])>,
}

/// Where the generated admin token is kept.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Why the admin token file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// It could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// Other users can read it (or write it), as they may not a signing key or the
    /// masking key: whoever reads it administers the server.
    #[error(
        "{path} can be read by other users (mode {mode:o}); run `chmod 600` on it, and \
         consider the token leaked: remove the file and restart to generate a new one"
    )]
    Exposed {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl AdminTokens {
    /// The `admin` token: `from_env` when given, else the one in the data dir, else a new
    /// one written there (0600). Returns the tokens and, when one was just generated, the
    /// token itself so it can be printed once. A token file others can read is refused.
    pub fn load_or_create(
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<(Self, Option<String>), AdminTokenError> {
        if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
            return Ok((Self::single("admin", token.trim()), None));
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let io_error = |cause| AdminTokenError::Io {
            path: path.clone(),
            cause,
        };
        // Opened as pack files are: a FIFO or a device there is refused, not waited on.
        match file::open(&path) {
            Ok(file) => {
                let token = read_private(file, &path)?;
                return Ok((Self::single("admin", token.trim()), None));
            }
            Err(FileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(FileError::Io(e)) => return Err(io_error(e)),
            Err(other) => return Err(io_error(io::Error::other(other.to_string()))),
        }
        let mut bytes = [0_u8; 32];
        rand::fill(&mut bytes);
        let token = format!("arb_{}", hex::encode(bytes));
        // Never over a token file another process has just written: that one is in use.
        write_atomic(&path, token.as_bytes(), FileMode::Private, IfExists::Fail)
            .map_err(io_error)?;
        Ok((Self::single("admin", &token), Some(token)))
    }

    /// One named token.
    pub fn single(name: &str, token: &str) -> Self {
        Self {
            tokens: vec![(name.to_owned(), digest(token))],
        }
    }

    /// The name of the admin whose token the request carries.
    pub fn check(&self, headers: &HeaderMap) -> Option<&str> {
        self.check_token(bearer(headers)?)
    }

    /// The name of the admin whose token `token` is (the dashboard's sign-in form).
    pub fn check_token(&self, token: &str) -> Option<&str> {
        let presented = digest(token.trim());
        let mut found = None;
        // Compare against every token, so timing does not tell which one matched.
        for (name, hash) in &self.tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The token in an open token file, refused if others may read it (checked on the open
/// handle, so the file cannot be swapped between the check and the read).
fn read_private(mut file: fs::File, path: &Path) -> Result<String, AdminTokenError> {
    let io_error = |cause| AdminTokenError::Io {
        path: path.to_owned(),
        cause,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata().map_err(io_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AdminTokenError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut token = String::new();
    file.read_to_string(&mut token).map_err(io_error)?;
    Ok(token)
}

/// PEP tokens: `sha256:<hex>` hashes from `[server] pep_tokens`.
#[derive(Debug, Clone, Default)]
pub struct PepTokens {
    hashes: Vec<[u8; 32]>,
}

impl PepTokens {
    /// From the pack's configured hashes (already checked by the pack loader).
    pub fn from_config(hashes: &[String]) -> Self {
        let hashes = hashes
            .iter()
            .filter_map(|h| h.strip_prefix("sha256:"))
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .collect();
        Self { hashes }
    }

    /// Whether decision endpoints require a PEP token.
    pub fn required(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Whether the request carries one of the tokens.
    pub fn check(&self, headers: &HeaderMap) -> bool {
        let Some(token) = bearer(headers) else {
            return false;
        };
        let presented = digest(token);
        let mut ok = false;
        for hash in &self.hashes {
            ok |= bool::from(hash.ct_eq(&presented));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("ascii"),
        );
        h
    }

    #[test]
    fn admin_tokens_match_by_name() {
        let tokens = AdminTokens::single("admin", "s3cret");
        assert_eq!(tokens.check(&headers("Bearer s3cret")), Some("admin"));
        assert_eq!(tokens.check(&headers("bearer s3cret")), Some("admin"));
        assert_eq!(tokens.check(&headers("Bearer wrong")), None);
        assert_eq!(tokens.check(&headers("Basic s3cret")), None);
        assert_eq!(tokens.check(&HeaderMap::new()), None);
    }

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, printed) = AdminTokens::load_or_create(dir.path(), None).expect("created");
        let token = printed.expect("generated once");
        assert_eq!(
            first.check(&headers(&format!("Bearer {token}"))),
            Some("admin")
        );
        let (again, printed) = AdminTokens::load_or_create(dir.path(), None).expect("loaded");
        assert!(printed.is_none());
        assert_eq!(
            again.check(&headers(&format!("Bearer {token}"))),
            Some("admin")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [ADMIN_TOKEN_FILE], "no temporary file is left");
    }

    /// Finding 14: a signing key or `mask.key` others can read stops the start; an
    /// `admin.token` others could read was used without a word.
    #[cfg(unix)]
    #[test]
    fn an_admin_token_readable_by_others_is_refused_naming_its_mode_and_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, printed) = AdminTokens::load_or_create(dir.path(), None).expect("created");
        assert!(printed.is_some());
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = AdminTokens::load_or_create(dir.path(), None).expect_err("refused");
            assert_eq!(
                err.to_string(),
                format!(
                    "{} can be read by other users (mode {mode:o}); run `chmod 600` on it, and \
                     consider the token leaked: remove the file and restart to generate a new one",
                    path.display()
                )
            );
        }
        // Refused means refused: the file is neither replaced nor fixed behind the back.
        assert_eq!(
            fs::metadata(&path).expect("file").permissions().mode() & 0o777,
            0o620
        );
        // A token from the environment does not read the file at all.
        assert!(AdminTokens::load_or_create(dir.path(), Some("from-env")).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let (_, printed) = AdminTokens::load_or_create(dir.path(), None).expect("loaded");
        assert!(printed.is_none());
    }

    #[test]
    fn pep_tokens_are_checked_against_hashes() {
        let hash = format!("sha256:{}", hex::encode(digest("pep-1")));
        let peps = PepTokens::from_config(&[hash]);
        assert!(peps.required());
        assert!(peps.check(&headers("Bearer pep-1")));
        assert!(!peps.check(&headers("Bearer pep-2")));
        assert!(!PepTokens::default().required());
    }
}
