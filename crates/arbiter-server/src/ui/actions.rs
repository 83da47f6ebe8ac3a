//! The dashboard's forms: sign-in and sign-out, and the three that change something —
//! a review, a promotion, a revocation — each through the same call as its JSON
//! endpoint or CLI command, by the signed-in admin, after the session and its CSRF token
//! are checked. A form that worked answers with a redirect to the page it came from
//! (reloading that page never repeats it); one that was refused shows the page again
//! with the reasons.

use std::sync::Arc;

use arbiter_core::rule::Mode;
use arbiter_lifecycle::promotion::{self, ModeChange, PromotionError, Refusal};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{identity_page, rule_page, signin_page};
use super::session::{self, COOKIE, SESSION_LIFETIME, SIGNIN_COOKIE};
use super::{HasCsrf, UiError, checked_form, form, same_origin};
use crate::error::ApiError;
use crate::routes::lifecycle::record_review;
use crate::routes::tokens::record_revocation;
use crate::state::{App, Forced};

/// The sign-in form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
    signin: String,
}

/// `POST /ui/signin`: an admin token for a session. The form must come with the cookie
/// its page set (so another site cannot sign a browser in); a wrong token gets the form
/// again, with 401.
pub async fn signin(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let f: SignIn = form(&headers, body)?;
    let expected = session::cookie(&headers, SIGNIN_COOKIE);
    if !expected.is_some_and(|e| session::same_token(e, &f.signin)) {
        return Ok(signin_page(
            &headers,
            Some("The sign-in form expired or came from elsewhere: sign in again."),
            StatusCode::FORBIDDEN,
        ));
    }
    let Some(admin) = app.admin_named_by(&f.token).map(str::to_owned) else {
        tracing::warn!("a dashboard sign-in with a wrong token");
        return Ok(signin_page(
            &headers,
            Some("That is not an admin token of this server."),
            StatusCode::UNAUTHORIZED,
        ));
    };
    let (id, _) = app.sessions().open(&admin, app.now());
    tracing::info!(%admin, "signed in to the dashboard");
    let secure = session::over_tls(&headers);
    let mut response = Redirect::to("/ui").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(COOKIE, &id, "/ui", SESSION_LIFETIME, secure),
    );
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(
            SIGNIN_COOKIE,
            "",
            "/ui/signin",
            jiff::SignedDuration::ZERO,
            secure,
        ),
    );
    Ok(response)
}

/// A form with only its CSRF token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bare {
    csrf: String,
}

impl HasCsrf for Bare {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/signout`: ends the session and removes its cookie.
pub async fn signout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, UiError> {
    let (s, _): (_, Bare) = checked_form(&app, &headers, body)?;
    app.sessions().close(&headers);
    tracing::info!(admin = %s.admin, "signed out of the dashboard");
    let mut response = Redirect::to("/ui/signin").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            COOKIE,
            "",
            "/ui",
            jiff::SignedDuration::ZERO,
            session::over_tls(&headers),
        ),
    );
    Ok(response)
}

/// The review form of a finding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewForm {
    csrf: String,
    rule: String,
    finding: String,
    verdict: String,
    note: String,
}

impl HasCsrf for ReviewForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/rule/review`: appends a review, as `arbiter review` and
/// `POST /v1/findings/{id}/review` do, by the signed-in admin.
pub async fn review(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, UiError> {
    let (s, f): (_, ReviewForm) = checked_form(&app, &headers, body)?;
    match record_review(&app, s.admin.clone(), f.finding.clone(), &f.verdict, f.note).await {
        Ok(_) => Ok(Redirect::to(&rule_url(&f.rule)).into_response()),
        Err(e) => {
            let notice = (
                e.status(),
                format!("Finding {} was not reviewed: {}", f.finding, e.message()),
                Vec::new(),
            );
            rule_page(&app, &s, f.rule, None, Some(notice)).await
        }
    }
}

/// The promotion form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteForm {
    csrf: String,
    name: String,
    to: String,
    force: Option<String>,
    reason: Option<String>,
}

impl HasCsrf for PromoteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/rule/promote`: the promotion `arbiter promote` makes — the readiness gate,
/// forcing only with a written reason, the same edit of the rule's file and the same
/// record — then the server reloads the pack. Refused with the reasons when the evidence
/// does not support it.
pub async fn promote(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, UiError> {
    let (s, f): (_, PromoteForm) = checked_form(&app, &headers, body)?;
    let to = Mode::from_word(&f.to)
        .filter(|m| *m != Mode::Audit)
        .ok_or_else(|| {
            UiError::BadRequest(format!("`to` must be warn or enforce, not `{}`", f.to))
        })?;
    let change = ModeChange {
        name: f.name.clone(),
        to,
        force: f.force.as_deref() == Some("on"),
        reason: f.reason.filter(|r| !r.trim().is_empty()),
        by: s.admin.clone(),
    };
    let pack = Arc::clone(app.engine().pack());
    let store = app.store().clone();
    let now = app.now();
    let outcome = tokio::task::spawn_blocking(move || {
        let plan = promotion::plan(&pack, Some(&store), &change, now)?;
        promotion::apply(&plan, &store, now)
    })
    .await?;
    let refused = |status: StatusCode, text: String, reasons: Vec<String>| {
        rule_page(
            &app,
            &s,
            f.name.clone(),
            None,
            Some((status, text, reasons)),
        )
    };
    match outcome {
        Ok(applied) => {
            tracing::info!(
                admin = %s.admin, rule = %f.name, to = %to.as_str(),
                forced = applied.promotion.forced, "promoted from the dashboard"
            );
            let forced = Forced {
                by: s.admin.clone(),
                reason: format!("promotion of {} from the dashboard", f.name),
            };
            if let Err(e) = app.reload_forced(Some(forced)).await {
                return refused(
                    StatusCode::CONFLICT,
                    format!(
                        "{} was promoted in {} and the change recorded, but the server did not \
                         load the pack: fix it and reload",
                        f.name,
                        applied.file.display()
                    ),
                    e.lines(),
                )
                .await;
            }
            Ok(Redirect::to(&rule_url(&f.name)).into_response())
        }
        Err(PromotionError::Refused { refusal, .. }) => {
            let reasons = match &refusal {
                Refusal::NotReady(r) => r.reasons.clone(),
                _ => Vec::new(),
            };
            refused(
                StatusCode::CONFLICT,
                format!("{} was not promoted: {refusal}", f.name),
                reasons,
            )
            .await
        }
        Err(e @ PromotionError::NoReason(_)) => {
            refused(StatusCode::BAD_REQUEST, e.to_string(), Vec::new()).await
        }
        Err(e @ PromotionError::Edit(_)) => {
            refused(StatusCode::CONFLICT, e.to_string(), Vec::new()).await
        }
        Err(PromotionError::Evidence(e)) => Err(e.into()),
        Err(e) => Err(UiError::Api(ApiError::internal(e))),
    }
}

/// The revoke form of an identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeForm {
    csrf: String,
    principal: String,
    target: String,
    jti: Option<String>,
    session: Option<String>,
    reason: String,
}

impl HasCsrf for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/identity/revoke`: revokes the identity (every token issued to it until now),
/// one of its credentials, or one of its sessions, as `POST /v1/revocations` does.
pub async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, UiError> {
    let (s, f): (_, RevokeForm) = checked_form(&app, &headers, body)?;
    let filled = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let (jti, principal, session) = match f.target.as_str() {
        "principal" => (None, Some(f.principal.clone()), None),
        "jti" => (filled(f.jti), None, None),
        "session" => (None, Some(f.principal.clone()), filled(f.session)),
        other => {
            return Err(UiError::BadRequest(format!(
                "`target` must be principal, jti or session, not `{other}`"
            )));
        }
    };
    if jti.is_none() && principal.is_none() || f.target == "session" && session.is_none() {
        let notice = (
            StatusCode::BAD_REQUEST,
            "Nothing was revoked: say which credential or session".to_owned(),
        );
        return identity_page(&app, &s, f.principal, Some(notice)).await;
    }
    match record_revocation(&app, &s.admin, jti, principal, session, &f.reason).await {
        Ok(_) => Ok(Redirect::to(&identity_url(&f.principal)).into_response()),
        Err(e) => {
            let notice = (e.status(), format!("Nothing was revoked: {}", e.message()));
            identity_page(&app, &s, f.principal, Some(notice)).await
        }
    }
}

fn rule_url(name: &str) -> String {
    format!(
        "/ui/rule?{}",
        serde_urlencoded::to_string([("name", name)]).unwrap_or_default()
    )
}

fn identity_url(principal: &str) -> String {
    format!(
        "/ui/identity?{}",
        serde_urlencoded::to_string([("principal", principal)]).unwrap_or_default()
    )
}
