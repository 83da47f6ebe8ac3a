//! The evidence report (`arbiter report`): per framework control, the rules that
//! implement it, in which mode, since when and on what evidence; per rule the same with
//! its would-fire series; each chain's weakest steps. [`gather`] reads it from a pack and
//! a store into [`Report`] (the JSON, shape in docs/report.md); [`render`] draws it as one
//! self-contained HTML file (inline CSS and SVG, no script, printable) or as Markdown,
//! from templates embedded in the binary.

pub mod svg;

use std::collections::{BTreeMap, HashMap};

use arbiter_core::Pack;
use arbiter_core::rule::{Kind, Mode};
use arbiter_store::{Store, StoreError};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::chains::{self, Level};
use crate::readiness::{self, Readiness, Verdict};

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it was made.
    pub generated_at: Timestamp,
    /// The pack: its directory and version.
    pub pack: PackInfo,
    /// The window of the series: from `since` to `generated_at`.
    pub since: Timestamp,
    /// Counts for the top of the page.
    pub summary: Summary,
    /// Each framework, with its controls, those with no enforced rule first.
    pub frameworks: Vec<FrameworkReport>,
    /// Every forbid and default-deny scope with its evidence.
    pub rules: Vec<RuleReport>,
    /// Each chain's weakest steps, per identity.
    pub chains: Vec<ChainSummary>,
    /// Rules by mode at each pack load, oldest first.
    pub modes_over_time: Vec<ModesAt>,
    /// Every finding by status.
    pub findings: FindingCounts,
}

/// The pack reported on.
#[derive(Debug, Clone, Serialize)]
pub struct PackInfo {
    /// Its directory, as given.
    pub dir: String,
    /// Its version (`sha256:` of its files).
    pub version: String,
}

/// Counts at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Forbids and default-deny scopes by mode.
    pub rules_by_mode: BTreeMap<&'static str, usize>,
    /// Controls by status, over the frameworks shown.
    pub controls_by_status: BTreeMap<&'static str, usize>,
    /// Rules not enforced yet, by readiness verdict.
    pub verdicts: BTreeMap<&'static str, usize>,
}

/// A control's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No rule maps to it.
    NotCovered,
    /// Rules map to it, none enforced.
    AuditOnly,
    /// Some of its rules are enforced, not all.
    PartiallyEnforced,
    /// Every rule that maps to it is enforced.
    Enforced,
}

impl Status {
    /// The words, as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotCovered => "not covered",
            Status::AuditOnly => "audit only",
            Status::PartiallyEnforced => "partially enforced",
            Status::Enforced => "enforced",
        }
    }
}

/// One framework.
#[derive(Debug, Clone, Serialize)]
pub struct FrameworkReport {
    /// Its name as `@maps` spells it (`OWASP-NHI`).
    pub name: String,
    /// Its controls.
    pub controls: Vec<ControlReport>,
}

/// One control.
#[derive(Debug, Clone, Serialize)]
pub struct ControlReport {
    /// `FRAMEWORK:ID`.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The NIST CSF 1.1 ids that map to it (CSF 2.0 controls only).
    pub csf_1_1: Vec<String>,
    /// Its status.
    pub status: Status,
    /// The status in words.
    pub status_text: &'static str,
    /// The rules mapped to it (ids; their evidence is in `rules`).
    pub rules: Vec<String>,
}

/// One forbid or default-deny scope.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule id, or `default-deny:<Type>`.
    pub rule: String,
    /// Its mode.
    pub mode: Mode,
    /// Its effect (`deny` for a scope).
    pub effect: String,
    /// Its severity (`none` for a scope).
    pub severity: String,
    /// The controls it maps to.
    pub maps: Vec<String>,
    /// Its readiness verdict; `None` when enforced.
    pub verdict: Option<Verdict>,
    /// Whether it is overdue.
    pub overdue: bool,
    /// The reasons of its verdict.
    pub reasons: Vec<String>,
    /// When it entered its mode, and how many whole days ago.
    pub in_mode_since: Option<Timestamp>,
    /// Whole days in its mode.
    pub days_in_mode: i64,
    /// Decisions it was in scope of since it last changed.
    pub in_scope: u64,
    /// How often it fired (or would have) since it last changed.
    pub would_fire: u64,
    /// Of its findings' firings, those in allowed decisions.
    pub decisive: u64,
    /// Its findings since it last changed, by status.
    pub findings: FindingCounts,
    /// Evaluation errors since it last changed.
    pub errors: u64,
    /// Firings per UTC day over the window, oldest first.
    pub would_fire_per_day: Vec<DayCount>,
    /// That series as an inline SVG chart (HTML only).
    #[serde(skip)]
    pub chart: String,
}

/// One day's count.
#[derive(Debug, Clone, Serialize)]
pub struct DayCount {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The count.
    pub count: u64,
}

/// Findings by status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FindingCounts {
    /// Not reviewed.
    pub open: u64,
    /// Reviewed `expected`.
    pub expected: u64,
    /// Reviewed `legitimate`.
    pub legitimate: u64,
}

/// A chain's weakest steps.
#[derive(Debug, Clone, Serialize)]
pub struct ChainSummary {
    /// `NAME` of `[chains.NAME]`.
    pub name: String,
    /// Its steps.
    pub steps: Vec<String>,
    /// Per identity: the chain's level and its weakest steps, weakest identities first.
    pub identities: Vec<ChainIdentity>,
}

/// One identity's chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainIdentity {
    /// The principal.
    pub principal: String,
    /// The chain's level.
    pub level: Level,
    /// The level in words.
    pub level_text: &'static str,
    /// Its weakest steps.
    pub weakest: Vec<String>,
    /// The bypasses, in words.
    pub bypasses: Vec<String>,
}

/// The rules by mode of one pack load.
#[derive(Debug, Clone, Serialize)]
pub struct ModesAt {
    /// When the version was loaded.
    pub loaded_at: Timestamp,
    /// The version.
    pub version: String,
    /// Forbids and scopes in enforce.
    pub enforce: usize,
    /// In warn.
    pub warn: usize,
    /// In audit.
    pub audit: usize,
}

/// What to report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this framework.
    pub framework: Option<String>,
    /// The window of the series.
    pub window_days: u32,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Chains could not be analysed.
    #[error(transparent)]
    Chains(#[from] chains::ChainsError),
    /// `--framework` names none of the catalog's.
    #[error("no framework `{0}` (the catalog has: {1})")]
    NoFramework(String, String),
    /// A template failed to render (a bug: the templates are built in).
    #[error("the report could not be rendered: {0}")]
    Render(String),
}

/// The colours of the modes, in every chart.
const ENFORCE: &str = "#2e7d32";
const WARN: &str = "#ef6c00";
const AUDIT: &str = "#9e9d24";

/// Gathers the report of `pack` from `store` at `now`.
pub fn gather(
    pack: &Pack,
    dir: &str,
    store: &Store,
    options: &Options,
    now: Timestamp,
) -> Result<Report, ReportError> {
    let frameworks_known: Vec<String> = pack
        .catalog()
        .frameworks()
        .iter()
        .map(|f| f.name.clone())
        .collect();
    if let Some(name) = &options.framework
        && !frameworks_known.contains(name)
    {
        return Err(ReportError::NoFramework(
            name.clone(),
            frameworks_known.join(", "),
        ));
    }
    let recorded = readiness::Recorded::read(store, None)?;
    let history = recorded.history();
    let evidence = readiness::evidence_of_all(pack, history, now);
    let since = now
        .checked_sub(SignedDuration::from_hours(
            24 * i64::from(options.window_days.max(1)),
        ))
        .unwrap_or(Timestamp::MIN);
    let first_day = since.as_second().div_euclid(86_400);
    let last_day = now.as_second().div_euclid(86_400);
    let mut per_day: HashMap<&str, BTreeMap<i64, u64>> = HashMap::new();
    for d in history.days {
        if d.day >= first_day && d.day <= last_day {
            *per_day
                .entry(d.rule.as_str())
                .or_default()
                .entry(d.day)
                .or_default() += d.fired;
        }
    }
    let rules: Vec<RuleReport> = evidence
        .iter()
        .map(|r| rule_report(pack, r, per_day.get(r.rule.as_str()), first_day, last_day))
        .collect();
    let frameworks = frameworks(pack, &rules, options.framework.as_deref());
    // The verdicts chains show are the ones just gathered: the store is not read twice.
    let verdicts: HashMap<String, String> = evidence
        .iter()
        .filter(|r| r.mode != Mode::Enforce)
        .map(|r| (r.rule.clone(), r.verdict.as_str().to_owned()))
        .collect();
    let chains = chains::analyse_with_verdicts(pack, &verdicts, &chains::Query::default())?
        .chains
        .into_iter()
        .map(|c| {
            let mut identities: Vec<ChainIdentity> = c
                .identities
                .into_iter()
                .map(|i| ChainIdentity {
                    principal: i.principal,
                    level: i.level,
                    level_text: i.level.as_str(),
                    weakest: i.weakest,
                    bypasses: i.bypasses.into_iter().map(|b| b.message).collect(),
                })
                .collect();
            identities.sort_by(|a, b| a.level.cmp(&b.level).then(a.principal.cmp(&b.principal)));
            ChainSummary {
                name: c.name,
                steps: c.steps,
                identities,
            }
        })
        .collect();
    let modes_over_time = modes_over_time(history.versions, history.loads);
    let mut counts = FindingCounts::default();
    for f in history.findings {
        match f.status {
            "open" => counts.open += 1,
            "expected" => counts.expected += 1,
            "legitimate" => counts.legitimate += 1,
            _ => {}
        }
    }
    let summary = summary(&rules, &frameworks);
    Ok(Report {
        generated_at: now,
        pack: PackInfo {
            dir: dir.to_owned(),
            version: pack.version().to_owned(),
        },
        since,
        summary,
        frameworks,
        rules,
        chains,
        modes_over_time,
        findings: counts,
    })
}

fn rule_report(
    pack: &Pack,
    r: &Readiness,
    fired: Option<&BTreeMap<i64, u64>>,
    first_day: i64,
    last_day: i64,
) -> RuleReport {
    let rule = pack.rule(&r.rule);
    let would_fire_per_day: Vec<DayCount> = (first_day..=last_day)
        .map(|day| DayCount {
            day: day_text(day),
            count: fired.and_then(|f| f.get(&day)).copied().unwrap_or(0),
        })
        .collect();
    let points: Vec<svg::Point> = would_fire_per_day
        .iter()
        .map(|d| svg::Point {
            label: d.day.clone(),
            value: d.count as f64,
        })
        .collect();
    let colour = match r.mode {
        Mode::Enforce => ENFORCE,
        Mode::Warn => WARN,
        Mode::Audit => AUDIT,
    };
    let chart = svg::bars(
        &format!("{}: firings per day", r.rule),
        &points,
        360,
        70,
        colour,
    );
    let e = &r.evidence;
    RuleReport {
        rule: r.rule.clone(),
        mode: r.mode,
        effect: rule
            .and_then(|r| r.effect)
            .map_or_else(|| "deny".to_owned(), |e| e.as_str().to_owned()),
        severity: rule.map_or_else(|| "none".to_owned(), |r| r.severity.as_str().to_owned()),
        maps: rule
            .map(|r| r.maps.iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default(),
        verdict: (r.mode != Mode::Enforce).then_some(r.verdict),
        overdue: r.mode != Mode::Enforce && r.overdue,
        reasons: if r.mode == Mode::Enforce {
            Vec::new()
        } else {
            r.reasons.clone()
        },
        in_mode_since: e.in_mode_since,
        days_in_mode: e.days_in_mode,
        in_scope: e.evaluations,
        would_fire: e.would_fire,
        decisive: e.decisive,
        findings: FindingCounts {
            open: e.open_findings,
            expected: e.expected_findings,
            legitimate: e.legitimate_findings,
        },
        errors: e.errors,
        would_fire_per_day,
        chart,
    }
}

fn frameworks(pack: &Pack, rules: &[RuleReport], only: Option<&str>) -> Vec<FrameworkReport> {
    let catalog = pack.catalog();
    catalog
        .frameworks()
        .iter()
        .filter(|f| only.is_none_or(|o| o == f.name))
        .map(|f| {
            let mut controls: Vec<ControlReport> = f
                .controls
                .iter()
                .map(|(id, title)| {
                    let full = format!("{}:{id}", f.name);
                    let mapped: Vec<&RuleReport> =
                        rules.iter().filter(|r| r.maps.contains(&full)).collect();
                    let enforced = mapped.iter().filter(|r| r.mode == Mode::Enforce).count();
                    let status = match (mapped.len(), enforced) {
                        (0, _) => Status::NotCovered,
                        (_, 0) => Status::AuditOnly,
                        (n, e) if e < n => Status::PartiallyEnforced,
                        _ => Status::Enforced,
                    };
                    ControlReport {
                        csf_1_1: if f.name == "NIST-CSF-2.0" {
                            catalog.csf11_predecessors(id)
                        } else {
                            Vec::new()
                        },
                        id: full,
                        title: title.clone(),
                        status,
                        status_text: status.as_str(),
                        rules: mapped.iter().map(|r| r.rule.clone()).collect(),
                    }
                })
                .collect();
            // No enforced rule first; the catalog's order within a status.
            controls.sort_by_key(|c| c.status);
            FrameworkReport {
                name: f.name.clone(),
                controls,
            }
        })
        .collect()
}

fn summary(rules: &[RuleReport], frameworks: &[FrameworkReport]) -> Summary {
    let mut rules_by_mode = BTreeMap::new();
    let mut verdicts = BTreeMap::new();
    for r in rules {
        *rules_by_mode.entry(r.mode.as_str()).or_insert(0) += 1;
        if let Some(v) = r.verdict {
            *verdicts.entry(v.as_str()).or_insert(0) += 1;
        }
    }
    let mut controls_by_status = BTreeMap::new();
    for c in frameworks.iter().flat_map(|f| &f.controls) {
        *controls_by_status.entry(c.status.as_str()).or_insert(0) += 1;
    }
    Summary {
        rules_by_mode,
        controls_by_status,
        verdicts,
    }
}

fn modes_over_time(
    versions: &[arbiter_store::PackVersion],
    loads: &[arbiter_store::PackLoad],
) -> Vec<ModesAt> {
    let by_version: HashMap<&str, &arbiter_store::PackVersion> =
        versions.iter().map(|v| (v.version.as_str(), v)).collect();
    loads
        .iter()
        .filter_map(|load| {
            let v = by_version.get(load.version.as_str())?;
            let count = |mode: &str| {
                v.rules
                    .iter()
                    .filter(|r| r.kind != Kind::Permit.as_str() && r.mode.as_deref() == Some(mode))
                    .count()
            };
            Some(ModesAt {
                loaded_at: load.loaded_at,
                version: load.version.clone(),
                enforce: count("enforce"),
                warn: count("warn"),
                audit: count("audit"),
            })
        })
        .collect()
}

fn day_text(day: i64) -> String {
    Timestamp::from_second(day.saturating_mul(86_400))
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The formats a report is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One self-contained HTML file.
    Html,
    /// Markdown, without charts.
    Markdown,
    /// The data, as JSON.
    Json,
}

const HTML: &str = include_str!("report.html");
const MARKDOWN: &str = include_str!("report.md");

/// Draws `report` in `format`.
pub fn render(report: &Report, format: Format) -> Result<String, ReportError> {
    if format == Format::Json {
        return serde_json::to_string_pretty(report)
            .map_err(|e| ReportError::Render(e.to_string()));
    }
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // HTML is escaped as HTML (by the template's name); Markdown by our own rule, so a
    // logged value cannot break a table or open a tag.
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".md") {
            minijinja::AutoEscape::Custom("markdown")
        } else {
            minijinja::default_auto_escape_callback(name)
        }
    });
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == minijinja::AutoEscape::Custom("markdown") && !value.is_safe() {
            let text = value.to_string();
            return out.write_str(&markdown_escape(&text)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            });
        }
        minijinja::escape_formatter(out, state, value)
    });
    let name = match format {
        Format::Html => "report.html",
        _ => "report.md",
    };
    env.add_template("report.html", HTML)
        .and_then(|()| env.add_template("report.md", MARKDOWN))
        .map_err(|e| ReportError::Render(e.to_string()))?;
    let modes_chart = svg::stacked(
        "Forbids and scopes by mode at each pack load",
        &report
            .modes_over_time
            .iter()
            .map(|m| m.loaded_at.strftime("%Y-%m-%d %H:%M").to_string())
            .collect::<Vec<_>>(),
        &[
            svg::Series {
                name: "enforce".to_owned(),
                colour: ENFORCE,
                values: report
                    .modes_over_time
                    .iter()
                    .map(|m| m.enforce as f64)
                    .collect(),
            },
            svg::Series {
                name: "warn".to_owned(),
                colour: WARN,
                values: report
                    .modes_over_time
                    .iter()
                    .map(|m| m.warn as f64)
                    .collect(),
            },
            svg::Series {
                name: "audit".to_owned(),
                colour: AUDIT,
                values: report
                    .modes_over_time
                    .iter()
                    .map(|m| m.audit as f64)
                    .collect(),
            },
        ],
        560,
        160,
    );
    let findings_chart = svg::bars(
        "Findings by status",
        &[
            svg::Point {
                label: "open".to_owned(),
                value: report.findings.open as f64,
            },
            svg::Point {
                label: "expected".to_owned(),
                value: report.findings.expected as f64,
            },
            svg::Point {
                label: "legitimate".to_owned(),
                value: report.findings.legitimate as f64,
            },
        ],
        240,
        120,
        "#5c6bc0",
    );
    // Drawn by `svg`, which escapes every label: safe to put in the page as it is.
    let charts: BTreeMap<String, minijinja::Value> = report
        .rules
        .iter()
        .map(|r| {
            (
                r.rule.clone(),
                minijinja::Value::from_safe_string(r.chart.clone()),
            )
        })
        .collect();
    let rules_by_id: BTreeMap<&str, minijinja::Value> = report
        .rules
        .iter()
        .map(|r| {
            let brief = minijinja::context! { mode => r.mode.as_str(), verdict => r.verdict.map(Verdict::as_str) };
            (r.rule.as_str(), brief)
        })
        .collect();
    let context = minijinja::context! {
        report => minijinja::Value::from_serialize(report),
        rules_by_id => rules_by_id,
        charts => charts,
        modes_chart => minijinja::Value::from_safe_string(modes_chart),
        findings_chart => minijinja::Value::from_safe_string(findings_chart),
    };
    env.get_template(name)
        .and_then(|t| t.render(context))
        .map_err(|e| ReportError::Render(e.to_string()))
}

/// A value as Markdown text: a `|` cannot end a table cell (GFM reads `\|` as a pipe,
/// in code spans too), `<` and `>` cannot open a tag, and a line break cannot end a row.
/// Markup a value carries otherwise stays: rule ids and principals are shown in code
/// spans, where it means nothing.
fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
