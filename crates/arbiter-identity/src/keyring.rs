//! arbiter's own signing keys. Ed25519 keys live in `<data_dir>/keys/`, one JSON file per
//! key, readable only by arbiter; the newest key that is not retired signs, and retired
//! keys keep verifying the tokens they signed until rotation deletes them.
//!
//! A retired key's file keeps only its public part: once a key no longer signs, nothing
//! needs its private part, so nothing can leak it.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbiter_core::fs::{FileMode, IfExists, sync_dir, write_atomic};

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use rand::TryRng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::jws;

/// The folder under the data directory that holds the keys.
const KEYS_DIR: &str = "keys";

/// Why the keyring could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file or folder of the keyring could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A key file is not one arbiter wrote, or not one it may use.
    #[error("{}: {problem}", path.display())]
    KeyFile {
        /// The key file (the folder, when no key can sign).
        path: PathBuf,
        /// What is wrong with it.
        problem: KeyFileError,
    },
    /// The system's random source failed, so no key could be generated.
    #[error("no randomness for a new signing key: {0}")]
    Random(String),
}

/// What is wrong with a key file, or with the keys of the folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Group or others may read it.
    #[error(
        "mode {mode:o} lets others read a signing key; it must be 600 (the key may have \
         leaked: rotate it)"
    )]
    Exposed {
        /// Its permission bits.
        mode: u32,
    },
    /// Not the JSON of a key file.
    #[error("not a key file: {0}")]
    NotAKeyFile(#[source] serde_json::Error),
    /// `x` is not 32 bytes of base64url.
    #[error("`x` is not a base64url Ed25519 public key")]
    PublicNotBase64,
    /// `x` is not a point of the curve.
    #[error("`x` is not an Ed25519 public key")]
    PublicNotAKey,
    /// `x` is a point of small order, for which anyone can forge signatures.
    #[error("`x` is a point of small order, not a key")]
    PublicOfSmallOrder,
    /// `kid` is not the RFC 7638 thumbprint of `x`.
    #[error("`kid` is not the thumbprint of `x`")]
    KidNotThumbprint,
    /// The file's name is not `<kid>.json`.
    #[error("a key file must be named after its kid ({kid}.json)")]
    Misnamed {
        /// The key's id.
        kid: String,
    },
    /// `d` is not 32 bytes of base64url.
    #[error("`d` is not a base64url Ed25519 private key")]
    PrivateNotBase64,
    /// `d` and `x` are not one key pair.
    #[error("`d` is not the private key of `x`")]
    PrivateNotOfPublic,
    /// A key that signs has no private part.
    #[error("a key that is not retired needs its private part `d`")]
    NoPrivatePart,
    /// No key of the folder can sign.
    #[error("no key that can sign")]
    NoSigningKey,
    /// The key could not be written as JSON.
    #[error("cannot encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// The private key could not be encoded as PKCS#8, the form jsonwebtoken reads.
    #[error("cannot encode the signing key as PKCS#8: {0}")]
    Pkcs8(ed25519_dalek::pkcs8::Error),
    /// jsonwebtoken could not sign with the key.
    #[error("jsonwebtoken cannot sign with the key: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A key file: the key as a JWK-like object (`x` public, `d` private, RFC 8037 names).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kid: String,
    created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<Timestamp>,
    x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

/// A key as loaded: its public part always, its private part while it signs.
struct StoredKey {
    kid: String,
    created_at: Timestamp,
    retired_at: Option<Timestamp>,
    verifying: VerifyingKey,
    signing: Option<SigningKey>,
}

impl StoredKey {
    fn generate(now: Timestamp) -> Result<StoredKey, IdentityError> {
        let mut seed = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| IdentityError::Random(e.to_string()))?;
        let signing = SigningKey::from_bytes(&seed);
        let verifying = signing.verifying_key();
        Ok(StoredKey {
            kid: thumbprint(&verifying),
            created_at: now,
            retired_at: None,
            verifying,
            signing: Some(signing),
        })
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.kid)
    }

    fn to_file(&self) -> KeyFile {
        KeyFile {
            kid: self.kid.clone(),
            created_at: self.created_at,
            retired_at: self.retired_at,
            x: jws::encode(self.verifying.as_bytes()),
            d: self.signing.as_ref().map(|s| jws::encode(s.as_bytes())),
        }
    }

    fn from_file(path: &Path, file: KeyFile) -> Result<StoredKey, KeyFileError> {
        let x: [u8; 32] = jws::decode(&file.x)
            .and_then(|b| b.try_into().ok())
            .ok_or(KeyFileError::PublicNotBase64)?;
        let verifying = VerifyingKey::from_bytes(&x).map_err(|_| KeyFileError::PublicNotAKey)?;
        // jsonwebtoken verifies with ed25519-dalek's `verify`, which, unlike
        // `verify_strict`, accepts forged signatures for a key of small order: such a key
        // is refused here, once, instead of at every signature.
        if verifying.is_weak() {
            return Err(KeyFileError::PublicOfSmallOrder);
        }
        if file.kid != thumbprint(&verifying) {
            return Err(KeyFileError::KidNotThumbprint);
        }
        if path.file_name().and_then(|n| n.to_str()) != Some(&format!("{}.json", file.kid)) {
            return Err(KeyFileError::Misnamed { kid: file.kid });
        }
        let signing = match &file.d {
            Some(d) => {
                let d: [u8; 32] = jws::decode(d)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(KeyFileError::PrivateNotBase64)?;
                let signing = SigningKey::from_bytes(&d);
                if signing.verifying_key() != verifying {
                    return Err(KeyFileError::PrivateNotOfPublic);
                }
                Some(signing)
            }
            None if file.retired_at.is_none() => return Err(KeyFileError::NoPrivatePart),
            None => None,
        };
        Ok(StoredKey {
            kid: file.kid,
            created_at: file.created_at,
            retired_at: file.retired_at,
            verifying,
            signing,
        })
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: the key's id.
fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        jws::encode(key.as_bytes())
    );
    jws::encode(Sha256::digest(canonical.as_bytes()))
}

/// A key's public part, as the keyring holds it.
#[derive(Clone)]
struct PublicKey {
    kid: String,
    verifying: VerifyingKey,
    /// The same key, for jsonwebtoken.
    decoding: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("x", &jws::encode(self.verifying.as_bytes()))
            .finish()
    }
}

/// The key that signs, for jsonwebtoken.
struct ActiveKey {
    kid: String,
    encoding: EncodingKey,
}

/// arbiter's signing keys as loaded from the data directory: one active key that signs,
/// and every key not yet deleted, which verify. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    active: Arc<ActiveKey>,
    /// Active first, then newest first.
    keys: Arc<[PublicKey]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public parts only: the private key must never reach a log.
        f.debug_struct("Keyring")
            .field("active", &self.active.kid)
            .field("keys", &self.keys)
            .finish()
    }
}

impl Keyring {
    /// Loads the keys in `<data_dir>/keys/`, creating the folder (mode 0700) and a first
    /// key when there is no key that can sign.
    pub fn load_or_create(data_dir: &Path, now: Timestamp) -> Result<Keyring, IdentityError> {
        let dir = keys_dir(data_dir)?;
        let mut keys = load(&dir)?;
        if !keys.iter().any(can_sign) {
            let key = StoredKey::generate(now)?;
            write_key(&dir, &key)?;
            keys.push(key);
        }
        Keyring::from_keys(keys, &dir)
    }

    /// Rotates: a new key signs from `now` on; the keys that signed until now are retired
    /// at `now` (their private parts deleted) and still verify; retired keys whose
    /// `retired_at + keep_for` has come are deleted, and so stop verifying. `keep_for`
    /// should be at least `[credentials] max_ttl`, so that no live token loses its key.
    pub fn rotate(
        data_dir: &Path,
        now: Timestamp,
        keep_for: std::time::Duration,
    ) -> Result<Keyring, IdentityError> {
        let dir = keys_dir(data_dir)?;
        let mut keys = load(&dir)?;
        // The new key is on disk before the old ones retire: a crash in between leaves
        // two keys that sign, and the newest of them is the active one.
        let new = StoredKey::generate(now)?;
        write_key(&dir, &new)?;
        let keep_for = SignedDuration::try_from(keep_for).unwrap_or(SignedDuration::MAX);
        let mut kept = vec![new];
        for mut key in keys.drain(..) {
            if key.retired_at.is_none() {
                key.retired_at = Some(now);
                key.signing = None;
                write_key(&dir, &key)?;
            }
            let expired = key
                .retired_at
                .and_then(|at| at.checked_add(keep_for).ok())
                .is_some_and(|until| now >= until);
            if expired {
                let path = dir.join(key.file_name());
                fs::remove_file(&path).map_err(io_error(&path))?;
            } else {
                kept.push(key);
            }
        }
        sync_dir(&dir).map_err(io_error(&dir))?;
        Keyring::from_keys(kept, &dir)
    }

    fn from_keys(mut keys: Vec<StoredKey>, dir: &Path) -> Result<Keyring, IdentityError> {
        keys.sort_by(|a, b| {
            (can_sign(b), b.created_at, &b.kid).cmp(&(can_sign(a), a.created_at, &a.kid))
        });
        let (kid, signing) = keys
            .first()
            .and_then(|k| Some((&k.kid, k.signing.as_ref()?)))
            .ok_or_else(|| IdentityError::KeyFile {
                path: dir.to_owned(),
                problem: KeyFileError::NoSigningKey,
            })?;
        let active = ActiveKey::new(kid, signing).map_err(|problem| IdentityError::KeyFile {
            path: dir.join(format!("{kid}.json")),
            problem,
        })?;
        Ok(Keyring {
            active: Arc::new(active),
            keys: keys
                .into_iter()
                .map(|k| PublicKey {
                    // The raw 32 bytes: what jsonwebtoken keeps of an Ed25519 public key,
                    // read from PEM or from a JWK's `x` alike.
                    decoding: DecodingKey::from_ed_der(k.verifying.as_bytes()),
                    kid: k.kid,
                    verifying: k.verifying,
                })
                .collect(),
        })
    }

    /// The id of the key that signs new tokens.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// The ids of every key that verifies: the active one first, then newest first.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// The public keys as a JWKS, for `GET /.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": jws::encode(k.verifying.as_bytes()),
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The public key with this id, for jsonwebtoken.
    pub(crate) fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &k.decoding)
    }

    /// A compact JWS of `claims`, signed by the active key with EdDSA: header
    /// `{"typ": "JWT", "alg": "EdDSA", "kid": <active kid>}`.
    pub(crate) fn sign(&self, claims: &impl Serialize) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.active.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.active.encoding).expect(
            "the active key signed when the keyring was loaded; signing is deterministic and \
             claims of strings and numbers serialize",
        )
    }
}

impl ActiveKey {
    /// The key for jsonwebtoken (PKCS#8, as it reads Ed25519 private keys), proven to sign
    /// here so that [`Keyring::sign`] cannot fail later.
    fn new(kid: &str, signing: &SigningKey) -> Result<ActiveKey, KeyFileError> {
        let der = signing.to_pkcs8_der().map_err(KeyFileError::Pkcs8)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        jsonwebtoken::crypto::sign(b"", &encoding, jsonwebtoken::Algorithm::EdDSA)
            .map_err(KeyFileError::Signing)?;
        Ok(ActiveKey {
            kid: kid.to_owned(),
            encoding,
        })
    }
}

fn can_sign(key: &StoredKey) -> bool {
    key.signing.is_some() && key.retired_at.is_none()
}

/// `<data_dir>/keys`, created if missing, and readable by arbiter alone.
fn keys_dir(data_dir: &Path) -> Result<PathBuf, IdentityError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let dir = data_dir.join(KEYS_DIR);
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_error(&dir))?;
            }
        }
        Err(e) => return Err(io_error(&dir)(e)),
    }
    Ok(dir)
}

/// Every key file in `dir` (files named `*.json`; temporary files start with `.`).
fn load(dir: &Path) -> Result<Vec<StoredKey>, IdentityError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        keys.push(read_key(&path)?);
    }
    Ok(keys)
}

fn read_key(path: &Path) -> Result<StoredKey, IdentityError> {
    let bad = |problem: KeyFileError| IdentityError::KeyFile {
        path: path.to_owned(),
        problem,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(bad(KeyFileError::Exposed { mode: mode & 0o777 }));
        }
    }
    let text = fs::read(path).map_err(io_error(path))?;
    let file: KeyFile =
        serde_json::from_slice(&text).map_err(|e| bad(KeyFileError::NotAKeyFile(e)))?;
    StoredKey::from_file(path, file).map_err(bad)
}

/// Writes a key file atomically, readable by arbiter alone. Rotation rewrites a key file
/// (retired, without its private part) in place, so an existing file is replaced.
fn write_key(dir: &Path, key: &StoredKey) -> Result<(), IdentityError> {
    let path = dir.join(key.file_name());
    let bytes = serde_json::to_vec_pretty(&key.to_file()).map_err(|e| IdentityError::KeyFile {
        path: path.clone(),
        problem: KeyFileError::Encode(e),
    })?;
    write_atomic(&path, &bytes, FileMode::Private, IfExists::Replace).map_err(io_error(&path))
}
