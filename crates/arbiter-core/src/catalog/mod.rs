//! The framework catalog that `@maps` ids are checked against (DESIGN §8), so that a typo
//! is a validation error and reports can show controls no enforced rule covers.

mod data;

use std::collections::BTreeMap;

use crate::config::Framework;
use crate::rule::ControlRef;

/// A framework and its controls.
#[derive(Debug, Clone)]
pub struct FrameworkInfo {
    /// The prefix used in `@maps`, e.g. `OWASP-NHI`.
    pub name: String,
    /// Canonical control id → title.
    pub controls: BTreeMap<String, String>,
}

/// Why a pack's `[frameworks.<name>]` cannot join the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The name of a built-in framework.
    #[error("[frameworks.{0}] redefines a built-in framework; choose another name")]
    BuiltIn(String),
    /// A name `@maps` could not spell.
    #[error("[frameworks.{0}]: a framework name may not be empty or contain `:` or `,`")]
    BadName(String),
}

/// Why a `@maps` id names no control.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapsError {
    /// No `:`.
    #[error("`{0}` is not `FRAMEWORK:CONTROL`")]
    Shape(String),
    /// A framework the catalog does not have.
    #[error("`{written}`: unknown framework `{framework}` (known: {}, {})", known.join(", "), CSF11)]
    UnknownFramework {
        /// The id as written.
        written: String,
        /// Its framework part.
        framework: String,
        /// The frameworks the catalog has (NIST CSF 1.1 aside).
        known: Vec<String>,
    },
    /// A control the framework does not have.
    #[error("`{written}`: `{control}` is not a control of {framework}")]
    UnknownControl {
        /// The id as written.
        written: String,
        /// Its control part.
        control: String,
        /// Its framework part.
        framework: String,
    },
    /// A NIST CSF 1.1 id of the wrong shape.
    #[error("`{written}`: `{control}` is not a NIST CSF 1.1 id")]
    NotCsf11 {
        /// The id as written.
        written: String,
        /// Its control part.
        control: String,
    },
    /// A NIST CSF 1.1 id the crosswalk does not know.
    #[error("`{written}`: `{control}` is not a NIST CSF 1.1 subcategory in the crosswalk")]
    NotInCrosswalk {
        /// The id as written.
        written: String,
        /// Its control part.
        control: String,
    },
}

/// The built-in frameworks plus a pack's own.
#[derive(Debug, Clone)]
pub struct Catalog {
    frameworks: Vec<FrameworkInfo>,
}

const NHI: &str = "OWASP-NHI";
const ASI: &str = "OWASP-ASI";
const CSF2: &str = "NIST-CSF-2.0";
const CSF11: &str = "NIST-CSF-1.1";

impl Catalog {
    /// The built-in catalog extended with `[frameworks.*]` from `arbiter.toml`.
    /// A pack framework may not reuse a built-in name.
    pub fn new(pack_frameworks: &BTreeMap<String, Framework>) -> Result<Self, CatalogError> {
        let table = |name: &str, rows: &[(&str, &str)]| FrameworkInfo {
            name: name.to_owned(),
            controls: rows
                .iter()
                .map(|(id, title)| ((*id).to_owned(), (*title).to_owned()))
                .collect(),
        };
        let mut frameworks = vec![
            table(NHI, data::OWASP_NHI),
            table(ASI, data::OWASP_ASI),
            table(CSF2, data::NIST_CSF_2),
        ];
        for (name, framework) in pack_frameworks {
            if [NHI, ASI, CSF2, CSF11].contains(&name.as_str()) {
                return Err(CatalogError::BuiltIn(name.clone()));
            }
            if name.is_empty() || name.contains(':') || name.contains(',') {
                return Err(CatalogError::BadName(name.clone()));
            }
            frameworks.push(FrameworkInfo {
                name: name.clone(),
                controls: framework.controls.clone(),
            });
        }
        Ok(Self { frameworks })
    }

    /// Every framework, built-in first.
    pub fn frameworks(&self) -> &[FrameworkInfo] {
        &self.frameworks
    }

    /// The NIST CSF 1.1 ids that the crosswalk maps to a CSF 2.0 control (`PR.AA-05` →
    /// `PR.AC-1`, `PR.AC-4`, …), as guidance still cites them; empty for other controls.
    pub fn csf11_predecessors(&self, csf2_control: &str) -> Vec<String> {
        data::NIST_CSF_1_1
            .iter()
            .filter(|(_, _, successors)| successors.contains(&csf2_control))
            .map(|(id, _, _)| format!("{CSF11}:{id}"))
            .collect()
    }

    /// Resolves one `@maps` id (`FRAMEWORK:CONTROL`) to the controls it names: one, or the
    /// CSF 2.0 successors of a CSF 1.1 id.
    pub fn resolve(&self, written: &str) -> Result<Vec<ControlRef>, MapsError> {
        let written = written.trim();
        let (framework, control) = written
            .split_once(':')
            .ok_or_else(|| MapsError::Shape(written.to_owned()))?;
        let (framework, control) = (framework.trim(), control.trim());
        if framework == CSF11 {
            return resolve_csf11(written, control);
        }
        let canonical = match framework {
            NHI => numbered(control, "NHI", 1).map(|n| format!("NHI{n}")),
            ASI => numbered(control, "ASI", 1).map(|n| format!("ASI{n:02}")),
            CSF2 => csf_id(control).map(|(f, c, n)| format!("{f}.{c}-{n:02}")),
            _ => Some(control.to_owned()),
        };
        let info = self
            .frameworks
            .iter()
            .find(|f| f.name == framework)
            .ok_or_else(|| MapsError::UnknownFramework {
                written: written.to_owned(),
                framework: framework.to_owned(),
                known: self.frameworks.iter().map(|f| f.name.clone()).collect(),
            })?;
        let found = canonical
            .as_deref()
            .and_then(|c| info.controls.get_key_value(c));
        let (id, title) = found.ok_or_else(|| MapsError::UnknownControl {
            written: written.to_owned(),
            control: control.to_owned(),
            framework: framework.to_owned(),
        })?;
        let canonical_id = format!("{framework}:{id}");
        Ok(vec![ControlRef {
            written: (canonical_id != written).then(|| written.to_owned()),
            id: canonical_id,
            title: title.clone(),
        }])
    }
}

fn resolve_csf11(written: &str, control: &str) -> Result<Vec<ControlRef>, MapsError> {
    let (f, c, n) = csf_id(control).ok_or_else(|| MapsError::NotCsf11 {
        written: written.to_owned(),
        control: control.to_owned(),
    })?;
    let id = format!("{f}.{c}-{n}");
    let (_, _, successors) = data::NIST_CSF_1_1
        .iter()
        .find(|(known, _, _)| *known == id)
        .ok_or_else(|| MapsError::NotInCrosswalk {
            written: written.to_owned(),
            control: control.to_owned(),
        })?;
    successors
        .iter()
        .map(|succ| {
            let title = data::NIST_CSF_2
                .iter()
                .find(|(known, _)| known == succ)
                .map(|(_, t)| (*t).to_owned())
                .unwrap_or_default();
            Ok(ControlRef {
                id: format!("{CSF2}:{succ}"),
                written: Some(written.to_owned()),
                title,
            })
        })
        .collect()
}

/// `NHI5`, `NHI-05`, `nhi05` → 5 (numbers from `min`).
fn numbered(control: &str, prefix: &str, min: u32) -> Option<u32> {
    let head = control.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = control.get(prefix.len()..)?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok().filter(|n| *n >= min)
}

/// `PR.AA-05`, `PR.AA-5`, `pr.aa-05` → (`PR`, `AA`, 5).
fn csf_id(control: &str) -> Option<(String, String, u32)> {
    let (function, rest) = control.split_once('.')?;
    let (category, number) = rest.split_once('-')?;
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !letters(function) || !letters(category) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        function.to_ascii_uppercase(),
        category.to_ascii_uppercase(),
        number.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(&BTreeMap::new()).expect("built-in catalog")
    }

    fn ids(found: Result<Vec<ControlRef>, MapsError>) -> Vec<String> {
        found.expect("resolves").into_iter().map(|c| c.id).collect()
    }

    #[test]
    fn canonical_ids_and_aliases_resolve() {
        let c = catalog();
        assert_eq!(ids(c.resolve("OWASP-NHI:NHI5")), ["OWASP-NHI:NHI5"]);
        assert_eq!(ids(c.resolve("OWASP-NHI:NHI-06")), ["OWASP-NHI:NHI6"]);
        assert_eq!(ids(c.resolve("OWASP-ASI:ASI1")), ["OWASP-ASI:ASI01"]);
        assert_eq!(
            ids(c.resolve("NIST-CSF-2.0:PR.AA-05")),
            ["NIST-CSF-2.0:PR.AA-05"]
        );
        assert_eq!(
            ids(c.resolve("NIST-CSF-2.0:PR.AA-5")),
            ["NIST-CSF-2.0:PR.AA-05"]
        );
    }

    #[test]
    fn csf_1_1_ids_crosswalk_to_2_0() {
        let found = catalog()
            .resolve("NIST-CSF-1.1:PR.AC-4")
            .expect("crosswalked");
        assert!(found.iter().any(|c| c.id == "NIST-CSF-2.0:PR.AA-05"));
        assert!(
            found
                .iter()
                .all(|c| c.written.as_deref() == Some("NIST-CSF-1.1:PR.AC-4"))
        );
    }

    #[test]
    fn typos_are_errors() {
        let c = catalog();
        assert!(c.resolve("OWASP-NHI:NHI11").is_err());
        assert!(c.resolve("OWASP-NHI:NHI0").is_err());
        assert!(c.resolve("NIST-CSF-2.0:PR.AA-99").is_err());
        for (written, said) in [
            (
                "OWASP:NHI1",
                "`OWASP:NHI1`: unknown framework `OWASP` (known: OWASP-NHI, OWASP-ASI, \
                 NIST-CSF-2.0, NIST-CSF-1.1)",
            ),
            (" NHI1 ", "`NHI1` is not `FRAMEWORK:CONTROL`"),
            (
                "OWASP-NHI:NHI11",
                "`OWASP-NHI:NHI11`: `NHI11` is not a control of OWASP-NHI",
            ),
            (
                "NIST-CSF-1.1:PR-AC",
                "`NIST-CSF-1.1:PR-AC`: `PR-AC` is not a NIST CSF 1.1 id",
            ),
            (
                "NIST-CSF-1.1:PR.AC-99",
                "`NIST-CSF-1.1:PR.AC-99`: `PR.AC-99` is not a NIST CSF 1.1 subcategory in \
                 the crosswalk",
            ),
        ] {
            let error = c.resolve(written).expect_err(written);
            assert_eq!(error.to_string(), said, "{written}");
        }
    }

    #[test]
    fn pack_frameworks_extend_the_catalog() {
        let mut own = BTreeMap::new();
        own.insert(
            "ACME-SEC".to_owned(),
            Framework {
                controls: [(
                    "AC-1".to_owned(),
                    "Agents hold no standing secrets".to_owned(),
                )]
                .into(),
            },
        );
        let c = Catalog::new(&own).expect("valid");
        assert_eq!(ids(c.resolve("ACME-SEC:AC-1")), ["ACME-SEC:AC-1"]);
        assert!(c.resolve("ACME-SEC:AC-2").is_err());
        let mut clash = BTreeMap::new();
        clash.insert(
            "OWASP-NHI".to_owned(),
            Framework {
                controls: BTreeMap::new(),
            },
        );
        assert_eq!(
            Catalog::new(&clash).map(drop).map_err(|e| e.to_string()),
            Err(
                "[frameworks.OWASP-NHI] redefines a built-in framework; choose another name"
                    .to_owned()
            )
        );
    }

    #[test]
    fn every_crosswalk_successor_exists() {
        for (old, _, successors) in data::NIST_CSF_1_1 {
            for s in *successors {
                assert!(
                    data::NIST_CSF_2.iter().any(|(id, _)| id == s),
                    "{old} → {s} is not a CSF 2.0 id"
                );
            }
        }
    }
}
