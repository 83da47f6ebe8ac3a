//! Who may call what (DESIGN §5): admin tokens, with names, for everything but decisions
//! and probes; PEP tokens, stored as hashes in the pack, for decision endpoints.
//! Comparisons are on SHA-256 digests, in constant time.

use std::fs;
use std::io::Write;
use std::path::Path;

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

impl AdminTokens {
    /// The `admin` token: `from_env` when given, else the one in the data dir, else a new
    /// one written there (0600). Returns the tokens and, when one was just generated, the
    /// token itself so it can be printed once.
    pub fn load_or_create(
        data_dir: &Path,
        from_env: Option<&str>,
    ) -> Result<(Self, Option<String>), std::io::Error> {
        if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
            return Ok((Self::single("admin", token.trim()), None));
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if path.is_file() {
            let token = fs::read_to_string(&path)?;
            return Ok((Self::single("admin", token.trim()), None));
        }
        let mut bytes = [0_u8; 32];
        rand::fill(&mut bytes);
        let token = format!("arb_{}", hex::encode(bytes));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()?;
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
        let presented = digest(bearer(headers)?);
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
