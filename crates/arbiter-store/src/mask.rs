//! Keyed masking of request values before they are logged (DESIGN §4, `[log] mask`).
//!
//! A masked value becomes `hmac-sha256:<hex>` of its canonical JSON under a key kept in
//! the data directory: equal values still compare equal across the log (so findings and
//! baselines can group by them) without the log revealing them, and without the key a
//! guess cannot be checked against the log.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use arbiter_core::fs::{FileMode, IfExists, write_atomic};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::error::StoreError;
use crate::store::create_data_dir;

/// The key file inside the data directory.
pub const MASK_KEY_FILE: &str = "mask.key";

/// What a masked value starts with.
pub const MASK_PREFIX: &str = "hmac-sha256:";

const KEY_LEN: usize = 32;

/// Masks values with the data directory's key. Clone is cheap.
#[derive(Clone)]
pub struct Masker {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker").finish_non_exhaustive()
    }
}

impl Masker {
    /// Reads `<data_dir>/mask.key`, creating it (32 random bytes, mode 0600) and the
    /// directory if they do not exist. A key readable by other users is refused.
    pub fn load_or_create(data_dir: &Path) -> Result<Masker, StoreError> {
        create_data_dir(data_dir)?;
        let path = data_dir.join(MASK_KEY_FILE);
        let key = match read_key(&path) {
            Err(StoreError::MaskKeyIo { cause, .. }) if cause.kind() == ErrorKind::NotFound => {
                create_key(&path)?
            }
            other => other?,
        };
        Ok(Masker::from_key(&key))
    }

    fn from_key(key: &[u8; KEY_LEN]) -> Masker {
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
        Masker { mac }
    }

    /// Replaces the value at each dotted path (e.g. `context.args.password`, from the
    /// request's root; a number indexes an array) with `hmac-sha256:<hex>` of the value's
    /// canonical JSON. Paths that are absent are ignored.
    pub fn mask<P: AsRef<str>>(&self, request: &mut Value, paths: impl IntoIterator<Item = P>) {
        for path in paths {
            if let Some(value) = lookup_mut(request, path.as_ref()) {
                *value = Value::String(self.masked(value));
            }
        }
    }

    /// The masked form of `value`.
    pub fn masked(&self, value: &Value) -> String {
        let mut canonical = String::new();
        write_canonical(value, &mut canonical);
        let mut mac = self.mac.clone();
        mac.update(canonical.as_bytes());
        format!("{MASK_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], StoreError> {
    let io_err = |cause| StoreError::MaskKeyIo {
        path: path.to_path_buf(),
        cause,
    };
    let problem = |problem: String| StoreError::MaskKey {
        path: path.to_path_buf(),
        problem,
    };
    let mode = fs::metadata(path).map_err(io_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(problem(format!(
            "can be read by other users (mode {:o}); run `chmod 600` on it",
            mode & 0o777
        )));
    }
    let bytes = fs::read(path).map_err(io_err)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        problem(format!(
            "holds {} bytes where a key is {KEY_LEN}; restore it from a backup, or remove it \
             to start a new key (masked values already logged will no longer match)",
            bytes.len()
        ))
    })
}

/// Writes a new key atomically (mode 0600 from the start), never over an existing key
/// file: if two processes race, both end up with the one that was written first.
fn create_key(path: &Path) -> Result<[u8; KEY_LEN], StoreError> {
    let key: [u8; KEY_LEN] = rand::random();
    match write_atomic(path, &key, FileMode::Private, IfExists::Fail) {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path),
        Err(cause) => Err(StoreError::MaskKeyIo {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

fn lookup_mut<'v>(root: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.')
        .try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(items) => items.get_mut(segment.parse::<usize>().ok()?),
            _ => None,
        })
}

/// JSON with object keys sorted (by their UTF-8 bytes) and no whitespace, whatever order
/// the value's maps keep, so equal values mask equally.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canonical(value: &Value) -> String {
        let mut out = String::new();
        write_canonical(value, &mut out);
        out
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true});
        assert_eq!(
            canonical(&value),
            r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#
        );
    }

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let mut value = json!({"a": {"b": [10, 20]}});
        assert_eq!(lookup_mut(&mut value, "a.b.1"), Some(&mut json!(20)));
        assert_eq!(lookup_mut(&mut value, "a.b.2"), None);
        assert_eq!(lookup_mut(&mut value, "a.c"), None);
        assert_eq!(lookup_mut(&mut value, "a.b.x"), None);
    }
}
