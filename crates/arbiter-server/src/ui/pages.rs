//! The dashboard's pages. Each handler checks the session, reads what it shows through
//! the same library calls as the JSON API on a blocking thread, and renders a template.
//! Values from the log (principals, resources, notes) are escaped by the templates;
//! charts are SVG drawn by the report's `svg` module, which escapes its labels.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbiter_core::Pack;
use arbiter_core::rule::{Kind, Mode, RuleRef};
use arbiter_lifecycle::promotion::{self, Gate, ModeChange, Refusal};
use arbiter_lifecycle::readiness::{self, Readiness, Verdict};
use arbiter_lifecycle::report::{self, RuleReport, svg};
use arbiter_store::{BaselineQuery, FindingQuery, Logged, Store};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::session::{self, SIGNIN_COOKIE, SIGNIN_LIFETIME};
use super::{UiError, query, render, signed_in};
use crate::routes::decisions::{DecisionsParams, decision_query};
use crate::state::App;

/// The colours of outcomes in charts.
const ALLOW: &str = "#2e7d32";
const DENY: &str = "#c62828";
const INVALID: &str = "#757575";
/// The colours of a rule's firings.
const DECISIVE: &str = "#c62828";
const FIRED: &str = "#f9a825";

/// How many days a rule's timeline and the sparklines cover.
const TIMELINE_DAYS: u32 = 30;
const SPARKLINE_DAYS: usize = 14;

/// What every page's frame shows.
#[derive(Debug, Serialize)]
struct Chrome {
    admin: String,
    csrf: String,
    nav: &'static str,
    pack_version: String,
    now: Timestamp,
}

fn chrome(app: &App, session: &session::Session, nav: &'static str) -> Chrome {
    Chrome {
        admin: session.admin.clone(),
        csrf: session.csrf.clone(),
        nav,
        pack_version: app.policy_version(),
        now: app.now(),
    }
}

/// `GET /ui/signin`: the form, with a fresh sign-in cookie it must send back.
pub async fn signin_form(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.sessions().find(&headers, app.now()).is_some() {
        return axum::response::Redirect::to("/ui").into_response();
    }
    signin_page(&headers, None, axum::http::StatusCode::OK)
}

/// The sign-in page, with `error` when the last try failed.
pub(crate) fn signin_page(
    headers: &HeaderMap,
    error: Option<&str>,
    status: axum::http::StatusCode,
) -> Response {
    let token = session::random_token();
    let page = render("signin.html", &json!({ "signin": token, "error": error }));
    match page {
        Ok(page) => {
            let cookie = session::set_cookie(
                SIGNIN_COOKIE,
                &token,
                "/ui/signin",
                SIGNIN_LIFETIME,
                session::over_tls(headers),
            );
            (status, [(axum::http::header::SET_COOKIE, cookie)], page).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What the overview shows.
#[derive(Debug, Serialize)]
struct Overview {
    hours_chart: String,
    days_chart: String,
    last_24h: BTreeMap<&'static str, u64>,
    last_7d: BTreeMap<&'static str, u64>,
    summary: report::Summary,
    findings: report::FindingCounts,
    overdue: Vec<RuleReport>,
    not_ready: usize,
    ready: Vec<String>,
    chains: Vec<WeakChain>,
    chains_configured: bool,
}

/// A chain and its weakest identities.
#[derive(Debug, Serialize)]
struct WeakChain {
    name: String,
    steps: Vec<String>,
    identities: Vec<report::ChainIdentity>,
    more: usize,
}

/// `GET /ui`: decisions by outcome, rules by mode, what is overdue, open findings, the
/// weakest chains.
pub async fn overview(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let now = app.now();
    let pack = Arc::clone(app.engine().pack());
    let store = app.store().clone();
    let dir = app.pack_dir().display().to_string();
    let data = tokio::task::spawn_blocking(move || overview_of(&pack, &dir, &store, now)).await??;
    let page = render(
        "overview.html",
        &json!({ "chrome": chrome(&app, &session, "overview"), "o": data }),
    )?;
    Ok(page.into_response())
}

fn overview_of(pack: &Pack, dir: &str, store: &Store, now: Timestamp) -> Result<Overview, UiError> {
    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;
    let week_ago = now
        .checked_sub(SignedDuration::from_hours(24 * 7))
        .unwrap_or(Timestamp::MIN);
    let hours = store.outcome_hours(week_ago)?;
    let this_hour = now.as_second().div_euclid(HOUR);
    let today = now.as_second().div_euclid(DAY);
    let mut by_hour: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    let mut by_day: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    let mut last_24h = BTreeMap::new();
    let mut last_7d = BTreeMap::new();
    for word in ["allow", "deny", "invalid"] {
        last_24h.insert(word, 0);
        last_7d.insert(word, 0);
    }
    for h in &hours {
        let hour = h.hour.as_second().div_euclid(HOUR);
        let slot = match h.decision {
            Logged::Allow => 0,
            Logged::Deny => 1,
            Logged::Invalid => 2,
        };
        if hour > this_hour - 24 && hour <= this_hour {
            if let Some(v) = by_hour.entry(hour).or_default().get_mut(slot) {
                *v += h.count;
            }
            *last_24h.entry(h.decision.as_str()).or_default() += h.count;
        }
        let day = h.hour.as_second().div_euclid(DAY);
        if day > today - 7 && day <= today {
            if let Some(v) = by_day.entry(day).or_default().get_mut(slot) {
                *v += h.count;
            }
            *last_7d.entry(h.decision.as_str()).or_default() += h.count;
        }
    }
    let hour_labels: Vec<i64> = (this_hour - 23..=this_hour).collect();
    let day_labels: Vec<i64> = (today - 6..=today).collect();
    let hours_chart = outcome_chart(
        "Decisions per hour, last 24 hours",
        &hour_labels,
        &by_hour,
        |h| label(h * HOUR, "%H:00"),
    );
    let days_chart = outcome_chart(
        "Decisions per day, last 7 days",
        &day_labels,
        &by_day,
        |d| label(d * DAY, "%a %d"),
    );

    let report = report::gather(
        pack,
        dir,
        store,
        &report::Options {
            framework: None,
            window_days: 7,
        },
        now,
    )
    .map_err(report_error)?;
    let overdue: Vec<RuleReport> = report.rules.iter().filter(|r| r.overdue).cloned().collect();
    let not_ready = report
        .rules
        .iter()
        .filter(|r| r.verdict.is_some_and(|v| v != Verdict::Ready))
        .count();
    let ready = report
        .rules
        .iter()
        .filter(|r| r.verdict == Some(Verdict::Ready))
        .map(|r| r.rule.clone())
        .collect();
    let chains_configured = !pack.config().chains.is_empty();
    let chains = report
        .chains
        .into_iter()
        .map(|c| {
            let more = c.identities.len().saturating_sub(3);
            WeakChain {
                name: c.name,
                steps: c.steps,
                identities: c.identities.into_iter().take(3).collect(),
                more,
            }
        })
        .collect();
    Ok(Overview {
        hours_chart,
        days_chart,
        last_24h,
        last_7d,
        summary: report.summary,
        findings: report.findings,
        overdue,
        not_ready,
        ready,
        chains,
        chains_configured,
    })
}

fn outcome_chart(
    title: &str,
    columns: &[i64],
    counts: &BTreeMap<i64, [u64; 3]>,
    name: impl Fn(i64) -> String,
) -> String {
    let value = |c: &i64, slot: usize| {
        counts
            .get(c)
            .and_then(|v| v.get(slot))
            .copied()
            .unwrap_or(0) as f64
    };
    let series = [
        ("allow", ALLOW, 0),
        ("deny", DENY, 1),
        ("invalid", INVALID, 2),
    ]
    .into_iter()
    .map(|(n, colour, slot)| svg::Series {
        name: n.to_owned(),
        colour,
        values: columns.iter().map(|c| value(c, slot)).collect(),
    })
    .collect::<Vec<_>>();
    let labels: Vec<String> = columns.iter().map(|c| name(*c)).collect();
    svg::stacked(title, &labels, &series, 640, 170)
}

fn label(second: i64, format: &str) -> String {
    Timestamp::from_second(second)
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_default()
}

fn report_error(e: report::ReportError) -> UiError {
    match e {
        report::ReportError::Store(e) => e.into(),
        other => UiError::Api(crate::error::ApiError::internal(other)),
    }
}

/// `GET /ui/rules` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesParams {
    mode: Option<String>,
    verdict: Option<String>,
}

/// One row of the rules page.
#[derive(Debug, Serialize)]
struct RuleRow {
    #[serde(flatten)]
    rule: RuleReport,
    sparkline: String,
}

/// `GET /ui/rules`: every forbid and default-deny scope with its mode, effect, severity,
/// controls, verdict and would-fire sparkline; what needs someone first.
pub async fn rules(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: RulesParams = query(raw.as_deref())?;
    if let Some(m) = &params.mode
        && Mode::from_word(m).is_none()
    {
        return Err(UiError::BadRequest(format!(
            "`mode` must be audit, warn or enforce, not `{m}`"
        )));
    }
    let verdict_words = [
        Verdict::Ready,
        Verdict::InsufficientEvidence,
        Verdict::NeedsReview,
        Verdict::Noisy,
        Verdict::Erroring,
    ]
    .map(Verdict::as_str);
    if let Some(v) = &params.verdict
        && !verdict_words.contains(&v.as_str())
    {
        return Err(UiError::BadRequest(format!(
            "`verdict` must be one of {}, not `{v}`",
            verdict_words.join(", ")
        )));
    }
    let now = app.now();
    let pack = Arc::clone(app.engine().pack());
    let store = app.store().clone();
    let dir = app.pack_dir().display().to_string();
    let permits = pack
        .rules()
        .iter()
        .filter(|r| r.kind == Kind::Permit)
        .count();
    let all = tokio::task::spawn_blocking(move || {
        report::gather(
            &pack,
            &dir,
            &store,
            &report::Options {
                framework: None,
                window_days: u32::try_from(SPARKLINE_DAYS).unwrap_or(14) - 1,
            },
            now,
        )
    })
    .await?
    .map_err(report_error)?;
    let mut rows: Vec<RuleRow> = all
        .rules
        .into_iter()
        .filter(|r| params.mode.as_deref().is_none_or(|m| r.mode.as_str() == m))
        .filter(|r| {
            params
                .verdict
                .as_deref()
                .is_none_or(|v| r.verdict.is_some_and(|rv| rv.as_str() == v))
        })
        .map(|r| {
            let points: Vec<svg::Point> = r
                .would_fire_per_day
                .iter()
                .map(|d| svg::Point {
                    label: d.day.clone(),
                    value: d.count as f64,
                })
                .collect();
            let sparkline = svg::bars(
                &format!("{}: firings per day", r.rule),
                &points,
                140,
                34,
                FIRED,
            );
            RuleRow { rule: r, sparkline }
        })
        .collect();
    rows.sort_by(|a, b| {
        readiness::attention(a.rule.overdue, a.rule.verdict, &a.rule.rule).cmp(
            &readiness::attention(b.rule.overdue, b.rule.verdict, &b.rule.rule),
        )
    });
    let page = render(
        "rules.html",
        &json!({
            "chrome": chrome(&app, &session, "rules"),
            "rows": rows,
            "permits": permits,
            "mode": params.mode,
            "verdict": params.verdict,
            "verdicts": verdict_words,
        }),
    )?;
    Ok(page.into_response())
}

/// `GET /ui/rule` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleParams {
    name: String,
    status: Option<String>,
}

/// What a rule's page shows.
#[derive(Debug, Serialize)]
struct RulePage {
    name: String,
    kind: &'static str,
    mode: Mode,
    effect: String,
    severity: String,
    owner: Option<String>,
    reason: Option<String>,
    maps: Vec<arbiter_core::rule::ControlRef>,
    file: Option<String>,
    source: Option<String>,
    scope_type: Option<String>,
    readiness: Option<Readiness>,
    timeline: String,
    changes: Vec<Change>,
    findings: Vec<arbiter_store::Finding>,
    findings_status: String,
    promotions: Vec<arbiter_store::Promotion>,
    promotion: Option<PromotionView>,
}

/// A pack load that changed the rule, on its timeline.
#[derive(Debug, Serialize)]
struct Change {
    at: Timestamp,
    what: String,
}

/// The promotion a page offers: the exact diff and whether the evidence allows it.
#[derive(Debug, Serialize)]
pub(crate) struct PromotionView {
    pub(crate) to: Vec<&'static str>,
    pub(crate) diff: String,
    pub(crate) file: String,
    pub(crate) refused: Option<String>,
    pub(crate) reasons: Vec<String>,
}

/// `GET /ui/rule?name=…`: a rule's source, timeline, findings (with review forms),
/// readiness and the promotion it is ready for, or why not.
pub async fn rule(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: RuleParams = query(raw.as_deref())?;
    rule_page(&app, &session, params.name, params.status, None).await
}

/// A rule's page, with `notice` (what a form just did, or why it was refused) on top.
pub(crate) async fn rule_page(
    app: &App,
    session: &session::Session,
    name: String,
    status: Option<String>,
    notice: Option<(axum::http::StatusCode, String, Vec<String>)>,
) -> Result<Response, UiError> {
    let status = status.unwrap_or_else(|| "open".to_owned());
    if !["open", "expected", "legitimate", "all"].contains(&status.as_str()) {
        return Err(UiError::BadRequest(format!(
            "`status` must be open, expected, legitimate or all, not `{status}`"
        )));
    }
    let now = app.now();
    let pack = Arc::clone(app.engine().pack());
    if !readiness::in_pack(&pack, &name) {
        return Err(UiError::NotFound(format!(
            "no rule or default-deny scope `{name}` in the pack in force"
        )));
    }
    let store = app.store().clone();
    let admin = session.admin.clone();
    let data =
        tokio::task::spawn_blocking(move || rule_of(&pack, &store, &name, &status, &admin, now))
            .await??;
    let (code, notice, notice_reasons) = match notice {
        Some((code, text, reasons)) => (code, Some(text), reasons),
        None => (axum::http::StatusCode::OK, None, Vec::new()),
    };
    let page = render(
        "rule.html",
        &json!({
            "chrome": chrome(app, session, "rules"),
            "r": data,
            "notice": notice,
            "notice_reasons": notice_reasons,
            "notice_ok": code.is_success(),
        }),
    )?;
    Ok((code, page).into_response())
}

fn rule_of(
    pack: &Pack,
    store: &Store,
    name: &str,
    status: &str,
    admin: &str,
    now: Timestamp,
) -> Result<RulePage, UiError> {
    let recorded = readiness::Recorded::read(store, Some(name))?;
    let history = recorded.history();
    let evidence = readiness::evidence_of_all(pack, history, now)
        .into_iter()
        .find(|r| r.rule == name);
    let target = RuleRef::parse(name);
    let rule = pack.rule(name);
    let (mode, scope_type) = match &target {
        RuleRef::Rule(_) => (rule.and_then(|r| r.mode).unwrap_or(Mode::Enforce), None),
        RuleRef::DefaultDeny(ty) => (
            pack.default_deny_scopes()
                .get(ty)
                .copied()
                .unwrap_or(Mode::Enforce),
            Some(ty.clone()),
        ),
    };
    let source = rule.and_then(|_| {
        pack.policies()
            .policy(&cedar_policy::PolicyId::new(name))
            .map(ToString::to_string)
    });

    // The timeline: firings per day, decisive ones apart, with the pack loads that
    // changed the rule marked.
    let first_day = now.as_second().div_euclid(86_400) - i64::from(TIMELINE_DAYS) + 1;
    let last_day = now.as_second().div_euclid(86_400);
    let mut fired: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for d in history.days.iter().filter(|d| d.rule == name) {
        if d.day >= first_day && d.day <= last_day {
            let e = fired.entry(d.day).or_default();
            e.0 += d.fired;
            e.1 += d.decisive;
        }
    }
    let changes = changes_of(name, history);
    let days: Vec<i64> = (first_day..=last_day).collect();
    let columns: Vec<String> = days.iter().map(|d| label(d * 86_400, "%m-%d")).collect();
    let series = vec![
        svg::Series {
            name: "decisive".to_owned(),
            colour: DECISIVE,
            values: days
                .iter()
                .map(|d| fired.get(d).map_or(0.0, |f| f.1 as f64))
                .collect(),
        },
        svg::Series {
            name: "fired, not decisive".to_owned(),
            colour: FIRED,
            values: days
                .iter()
                .map(|d| fired.get(d).map_or(0.0, |f| f.0.saturating_sub(f.1) as f64))
                .collect(),
        },
    ];
    let marks: Vec<svg::Mark> = changes
        .iter()
        .filter_map(|c| {
            let day = c.at.as_second().div_euclid(86_400);
            let column = usize::try_from(day - first_day).ok()?;
            (column < days.len()).then(|| svg::Mark {
                column,
                label: c.what.clone(),
            })
        })
        .collect();
    let timeline = svg::stacked_marked(
        &format!("{name}: firings per day, last {TIMELINE_DAYS} days"),
        &columns,
        &series,
        &marks,
        720,
        190,
    );

    let findings = store.findings(&FindingQuery {
        rule: Some(name.to_owned()),
        status: (status != "all").then(|| status.to_owned()),
        principal: None,
        limit: Some(200),
    })?;
    let promotions = store.promotions(Some(name))?;
    let promotion = if mode == Mode::Enforce {
        None
    } else {
        Some(promotion_view(pack, evidence.clone(), name, mode, admin)?)
    };
    let readiness = evidence.map(|mut r| {
        if r.mode == Mode::Enforce {
            r.reasons.clear();
        }
        r
    });
    Ok(RulePage {
        name: name.to_owned(),
        kind: if scope_type.is_some() {
            "default-deny scope"
        } else {
            rule.map_or("rule", |r| r.kind.as_str())
        },
        mode,
        effect: rule
            .and_then(|r| r.effect)
            .map_or_else(|| "deny".to_owned(), |e| e.as_str().to_owned()),
        severity: rule.map_or_else(|| "none".to_owned(), |r| r.severity.as_str().to_owned()),
        owner: rule.and_then(|r| r.owner.clone()),
        reason: rule.and_then(|r| r.reason.clone()),
        maps: rule.map(|r| r.maps.clone()).unwrap_or_default(),
        file: rule.map(|r| format!("{}:{}", r.file.display(), r.line)),
        source,
        scope_type,
        readiness,
        timeline,
        changes,
        findings,
        findings_status: status.to_owned(),
        promotions,
        promotion,
    })
}

/// What `arbiter promote NAME --to enforce --dry-run` would write, and whether the
/// evidence lets it go ahead.
pub(crate) fn promotion_view(
    pack: &Pack,
    readiness: Option<Readiness>,
    name: &str,
    mode: Mode,
    admin: &str,
) -> Result<PromotionView, UiError> {
    // The readiness the page shows is the one the gate consults, gathered once.
    let plan = promotion::plan_with_readiness(
        pack,
        readiness,
        &ModeChange {
            name: name.to_owned(),
            to: Mode::Enforce,
            force: false,
            reason: None,
            by: admin.to_owned(),
        },
    )
    .map_err(|e| UiError::Api(crate::error::ApiError::internal(e)))?;
    let (refused, reasons) = match &plan.gate {
        Gate::Refused(Refusal::NotReady(r)) => (
            Some(format!("not ready: it is {}", r.verdict.as_str())),
            r.reasons.clone(),
        ),
        Gate::Refused(other) => (Some(other.to_string()), Vec::new()),
        _ => (None, Vec::new()),
    };
    let to = [Mode::Warn, Mode::Enforce]
        .into_iter()
        .filter(|m| *m > mode)
        .map(Mode::as_str)
        .collect();
    Ok(PromotionView {
        to,
        diff: plan.edit.diff(),
        file: plan.edit.file.display().to_string(),
        refused,
        reasons,
    })
}

/// The pack loads that changed `name`: added, its text changed, its mode changed,
/// removed. Oldest first.
fn changes_of(name: &str, history: readiness::History<'_>) -> Vec<Change> {
    let by_version: BTreeMap<&str, &arbiter_store::PackVersion> = history
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v))
        .collect();
    let mut changes = Vec::new();
    let mut before: Option<(String, Option<String>)> = None;
    for load in history.loads {
        let Some(version) = by_version.get(load.version.as_str()) else {
            continue;
        };
        let now = version
            .rules
            .iter()
            .find(|r| r.id == name)
            .map(|r| (r.hash.clone(), r.mode.clone()));
        let what = match (&before, &now) {
            (None, Some((_, mode))) => {
                Some(format!("added in {}", mode.as_deref().unwrap_or("enforce")))
            }
            (Some(_), None) => Some("removed".to_owned()),
            (Some((old_hash, old_mode)), Some((hash, mode))) => {
                if old_mode != mode {
                    Some(format!(
                        "{} → {}",
                        old_mode.as_deref().unwrap_or("-"),
                        mode.as_deref().unwrap_or("-")
                    ))
                } else if old_hash != hash {
                    Some("rule changed".to_owned())
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        if let Some(what) = what {
            changes.push(Change {
                at: load.loaded_at,
                what,
            });
        }
        before = now;
    }
    changes
}

/// `GET /ui/decisions`: the log, newest first, with the filters of `GET /v1/decisions`.
pub async fn decisions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: DecisionsParams = query(raw.as_deref())?;
    let filters: Vec<(String, String)> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw.as_deref().unwrap_or(""))
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| k != "cursor" && !v.is_empty())
            .collect();
    let mut q = decision_query(params)?;
    if q.limit == 100 && !filters.iter().any(|(k, _)| k == "limit") {
        q.limit = 50;
    }
    let store = app.store().clone();
    let page = tokio::task::spawn_blocking(move || store.query_decisions(&q)).await??;
    let next = page.next.as_ref().map(|cursor| {
        let mut pairs = filters.clone();
        pairs.push(("cursor".to_owned(), cursor.clone()));
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    });
    let value = |k: &str| {
        filters
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let page = render(
        "decisions.html",
        &json!({
            "chrome": chrome(&app, &session, "decisions"),
            "decisions": page.decisions,
            "next": next,
            "f": {
                "since": value("since"), "until": value("until"), "rule": value("rule"),
                "principal": value("principal"), "action": value("action"),
                "decision": value("decision"), "mode": value("mode"), "limit": value("limit"),
            },
        }),
    )?;
    Ok(page.into_response())
}

/// `GET /ui/decision` parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionParams {
    id: String,
}

/// `GET /ui/decision?id=…`: one decision as logged.
pub async fn decision(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: DecisionParams = query(raw.as_deref())?;
    let store = app.store().clone();
    let id = params.id.clone();
    let record = tokio::task::spawn_blocking(move || store.decision(&id))
        .await??
        .ok_or_else(|| UiError::NotFound(format!("no decision `{}` in the log", params.id)))?;
    let request = serde_json::to_string_pretty(&record.request).unwrap_or_default();
    let credential = record
        .credential
        .as_ref()
        .and_then(|c| serde_json::to_string_pretty(c).ok());
    let mcp = record
        .mcp
        .as_ref()
        .and_then(|c| serde_json::to_string_pretty(c).ok());
    let page = render(
        "decision.html",
        &json!({
            "chrome": chrome(&app, &session, "decisions"),
            "d": record,
            "request": request,
            "credential": credential,
            "mcp": mcp,
        }),
    )?;
    Ok(page.into_response())
}

/// `GET /ui/identities` parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitiesParams {
    after: Option<String>,
}

/// Principals on one page of `/ui/identities`.
const IDENTITIES_PAGE: u32 = 100;

/// `GET /ui/identities`: the principals the log has seen, with first and last decision.
pub async fn identities(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: IdentitiesParams = query(raw.as_deref())?;
    let store = app.store().clone();
    let after = params.after.clone();
    let (seen, frozen) = tokio::task::spawn_blocking(move || {
        Ok::<_, arbiter_store::StoreError>((
            store.principals(after.as_deref(), IDENTITIES_PAGE)?,
            store.latest_baseline()?,
        ))
    })
    .await??;
    let next = (seen.len() == IDENTITIES_PAGE as usize)
        .then(|| seen.last().map(|s| s.principal.clone()))
        .flatten();
    let page = render(
        "identities.html",
        &json!({
            "chrome": chrome(&app, &session, "identities"),
            "seen": seen,
            "next": next,
            "after": params.after,
            "frozen": frozen > 0,
        }),
    )?;
    Ok(page.into_response())
}

/// `GET /ui/identity` parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityParams {
    principal: String,
}

/// `GET /ui/identity?principal=…`: what it did (its baseline), its novel actions after a
/// freeze, its credentials and revocations, and a form to revoke.
pub async fn identity(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let session = signed_in(&app, &headers)?;
    let params: IdentityParams = query(raw.as_deref())?;
    identity_page(&app, &session, params.principal, None).await
}

/// An identity's page, with `notice` on top.
pub(crate) async fn identity_page(
    app: &App,
    session: &session::Session,
    principal: String,
    notice: Option<(axum::http::StatusCode, String)>,
) -> Result<Response, UiError> {
    let store = app.store().clone();
    let p = principal.clone();
    let (activity, observed, revocations, frozen) = tokio::task::spawn_blocking(move || {
        let activity = store.activity(&p)?;
        let observed = store.observed(
            &BaselineQuery {
                principal: Some(p.clone()),
                since: None,
            },
            &mut |_, _| {},
        )?;
        let frozen = store.latest_baseline()? > 0;
        let jtis: std::collections::HashSet<&str> = activity
            .credentials
            .iter()
            .map(|c| c.jti.as_str())
            .collect();
        let revocations: Vec<arbiter_store::Revocation> = store
            .revocations_since(0)?
            .into_iter()
            .filter(|r| match r.kind {
                arbiter_store::RevocationKind::Principal => r.value == p,
                arbiter_store::RevocationKind::Session => r.principal.as_deref() == Some(&*p),
                arbiter_store::RevocationKind::Jti => jtis.contains(r.value.as_str()),
            })
            .collect();
        Ok::<_, arbiter_store::StoreError>((activity, observed, revocations, frozen))
    })
    .await??;
    if activity.outcomes.is_empty() && revocations.is_empty() {
        return Err(UiError::NotFound(format!(
            "the log has no decision for `{principal}`"
        )));
    }
    let (code, text) = match notice {
        Some((code, text)) => (code, Some(text)),
        None => (axum::http::StatusCode::OK, None),
    };
    let page = render(
        "identity.html",
        &json!({
            "chrome": chrome(app, session, "identities"),
            "principal": principal,
            "a": activity,
            "observed": observed,
            "revocations": revocations,
            "frozen": frozen,
            "notice": text,
            "notice_ok": code.is_success(),
        }),
    )?;
    Ok((code, page).into_response())
}
