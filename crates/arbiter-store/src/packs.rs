//! Pack versions: which rules (by hash) each loaded pack version had, and when it was
//! loaded, so evidence can say how long a rule has been in its mode.

use std::collections::HashMap;

use jiff::Timestamp;
use rusqlite::{TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use arbiter_core::Pack;
use arbiter_core::rule::Kind;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::Store;

/// The `kind` default-deny scopes have in pack versions.
pub const SCOPE_KIND: &str = "scope";

/// A pack version as first loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackVersion {
    /// The pack's version (its content hash).
    pub version: String,
    /// When this version was first loaded.
    pub loaded_at: Timestamp,
    /// Its rules, in pack order.
    pub rules: Vec<RuleVersion>,
}

impl PackVersion {
    /// A pack version as the store keeps it: its rules, and its default-deny scopes as
    /// entries of kind `scope` (a scope changes when its mode changes or when any permit
    /// does, since the permits are its allow-list).
    pub fn of(pack: &Pack, loaded_at: Timestamp) -> PackVersion {
        let mut permits = Sha256::new();
        for rule in pack.rules().iter().filter(|r| r.kind == Kind::Permit) {
            permits.update(rule.hash.as_bytes());
            permits.update([0]);
        }
        let allow_list = permits.finalize();
        let mut rules: Vec<RuleVersion> = pack
            .rules()
            .iter()
            .map(|r| RuleVersion {
                id: r.id.clone(),
                hash: r.hash.clone(),
                kind: r.kind.as_str().to_owned(),
                mode: r.mode.map(|m| m.as_str().to_owned()),
                effect: r.effect.map(|e| e.as_str().to_owned()),
            })
            .collect();
        for (ty, mode) in pack.default_deny_scopes() {
            let id = arbiter_core::rule::RuleRef::DefaultDeny(ty).to_string();
            let mut hash = Sha256::new();
            hash.update(id.as_bytes());
            hash.update([0]);
            hash.update(mode.as_str().as_bytes());
            hash.update([0]);
            hash.update(allow_list);
            rules.push(RuleVersion {
                id,
                hash: format!("sha256:{}", hex::encode(hash.finalize())),
                kind: SCOPE_KIND.to_owned(),
                mode: Some(mode.as_str().to_owned()),
                effect: Some("deny".to_owned()),
            });
        }
        PackVersion {
            version: pack.version().to_owned(),
            loaded_at,
            rules,
        }
    }
}

/// One rule of a pack version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleVersion {
    /// The rule id.
    pub id: String,
    /// The hash of the rule's policy text and annotations.
    pub hash: String,
    /// `permit` or `forbid`.
    pub kind: String,
    /// The rule's mode (forbids only).
    pub mode: Option<String>,
    /// The rule's effect (forbids only).
    pub effect: Option<String>,
}

/// One load of a pack version (a start or a reload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackLoad {
    /// The version loaded.
    pub version: String,
    /// When.
    pub loaded_at: Timestamp,
}

impl Store {
    /// Records that `v` was loaded. The first record of a version keeps its `loaded_at` and
    /// rules; every call, the first included, appends a [`PackLoad`].
    pub fn record_pack_version(&self, v: &PackVersion) -> Result<(), StoreError> {
        let mut conn = self.writable_connection()?;
        let err = |cause| self.sqlite_error(cause);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let loaded_at = v.loaded_at.to_string();
        let loaded_at_us = v.loaded_at.as_microsecond();
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO pack_versions (version, loaded_at, loaded_at_us)
                 VALUES (?1, ?2, ?3)",
                params![v.version, loaded_at, loaded_at_us],
            )
            .map_err(err)?;
        if inserted == 1 {
            let mut insert_rule = tx
                .prepare(
                    "INSERT INTO pack_rules (version, position, id, hash, kind, mode, effect)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for (position, rule) in (0_i64..).zip(&v.rules) {
                insert_rule
                    .execute(params![
                        v.version,
                        position,
                        rule.id,
                        rule.hash,
                        rule.kind,
                        rule.mode,
                        rule.effect
                    ])
                    .map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO pack_loads (version, loaded_at, loaded_at_us) VALUES (?1, ?2, ?3)",
            params![v.version, loaded_at, loaded_at_us],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every recorded pack version, oldest first.
    pub fn pack_versions(&self) -> Result<Vec<PackVersion>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);

        let mut rules: HashMap<String, Vec<RuleVersion>> = HashMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT version, id, hash, kind, mode, effect FROM pack_rules
                 ORDER BY version, position",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                let rule = RuleVersion {
                    id: row.get(1)?,
                    hash: row.get(2)?,
                    kind: row.get(3)?,
                    mode: row.get(4)?,
                    effect: row.get(5)?,
                };
                Ok((row.get::<_, String>(0)?, rule))
            })
            .map_err(err)?;
        for row in rows {
            let (version, rule) = row.map_err(err)?;
            rules.entry(version).or_default().push(rule);
        }

        let mut stmt = conn
            .prepare("SELECT version, loaded_at FROM pack_versions ORDER BY loaded_at_us, rowid")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        let mut versions = Vec::new();
        for row in rows {
            let (version, loaded_at) = row.map_err(err)?;
            let loaded_at = self.parse_time(&loaded_at, "pack_versions", &version)?;
            let rules = rules.remove(&version).unwrap_or_default();
            versions.push(PackVersion {
                version,
                loaded_at,
                rules,
            });
        }
        Ok(versions)
    }

    /// Every load of a pack version, oldest first.
    pub fn pack_loads(&self) -> Result<Vec<PackLoad>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare("SELECT version, loaded_at FROM pack_loads ORDER BY loaded_at_us, rowid")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        let mut loads = Vec::new();
        for row in rows {
            let (version, loaded_at) = row.map_err(err)?;
            let loaded_at = self.parse_time(&loaded_at, "pack_loads", &version)?;
            loads.push(PackLoad { version, loaded_at });
        }
        Ok(loads)
    }

    fn parse_time(&self, text: &str, table: &str, version: &str) -> Result<Timestamp, StoreError> {
        text.parse().map_err(|e| {
            self.corrupt(format!(
                "{table} row for version {version:?}: loaded_at {text:?}: {e}"
            ))
        })
    }
}
