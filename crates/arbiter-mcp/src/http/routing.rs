//! MCP's routing headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) against the
//! body. The proxy decides on the body; a header that says something else is refused,
//! so that nothing after the proxy (the server, a gateway that routes on headers) can act
//! on a call other than the one decided.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// The first protocol revision without sessions: no `initialize`, the routing headers
/// required on every request, `resultType` on every result.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// Where a request's body names its protocol revision.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// MCP's error for headers that do not match the body (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;

const VERSION: &str = "mcp-protocol-version";
const METHOD: &str = "mcp-method";
const NAME: &str = "mcp-name";

/// The revision a request is made in, as far as the proxy needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// 2025-06-18, 2025-11-25 and earlier: `initialize`, `Mcp-Session-Id`.
    Sessions,
    /// 2026-07-28 and later: every request stands alone.
    Stateless,
}

/// The revision of a request: stateless when its header or its body's `_meta` names
/// 2026-07-28 or later.
pub fn revision(headers: &HeaderMap, params: Option<&Value>) -> Revision {
    let modern = |v: &str| v.len() == STATELESS_REVISION.len() && v >= STATELESS_REVISION;
    let header = headers
        .get(VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(modern);
    let body = body_version(params).is_some_and(modern);
    if header || body {
        Revision::Stateless
    } else {
        Revision::Sessions
    }
}

fn body_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(PROTOCOL_VERSION_META)?.as_str()
}

/// The body field `Mcp-Name` mirrors for `method`, if it names something.
fn named_by(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// Checks the routing headers of a request (`method`, `params`) in `revision`: each
/// given at most once, and each that is given equal to the body. In the stateless
/// revision `Mcp-Method`, the version and, for a method that names something, `Mcp-Name`
/// are required. The error says which header, never its value.
pub fn check(
    headers: &HeaderMap,
    revision: Revision,
    method: &str,
    params: Option<&Value>,
) -> Result<(), String> {
    for name in [VERSION, METHOD, NAME] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(format!("the {name} header is given more than once"));
        }
    }
    let text = |name: &str| -> Result<Option<&str>, String> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| format!("the {name} header is not visible ASCII"))
            })
            .transpose()
    };
    let stateless = revision == Revision::Stateless;
    match (text(VERSION)?, body_version(params)) {
        (Some(header), Some(body)) if header != body => {
            return Err(format!(
                "the {VERSION} header does not match the body's protocol version"
            ));
        }
        (None, Some(_)) if stateless => {
            return Err(format!("the {VERSION} header is required in this revision"));
        }
        _ => {}
    }
    match text(METHOD)? {
        Some(header) if header != method => {
            return Err(format!(
                "the {METHOD} header does not match the body's method"
            ));
        }
        None if stateless => {
            return Err(format!("the {METHOD} header is required in this revision"));
        }
        _ => {}
    }
    let field = named_by(method);
    let body_name = match field {
        Some(field) => params.and_then(|p| p.get(field)),
        // A method that names nothing: a name header could only mislead.
        None => params.and_then(|p| p.get("name").or_else(|| p.get("uri"))),
    };
    match (text(NAME)?, body_name) {
        (Some(header), Some(Value::String(body))) => {
            if decode(header).as_deref() != Some(body.as_str()) {
                return Err(format!(
                    "the {NAME} header does not match the body's {}",
                    field.unwrap_or("name")
                ));
            }
        }
        (Some(_), _) => {
            return Err(format!(
                "the {NAME} header names something the body does not"
            ));
        }
        (None, Some(_)) if stateless && field.is_some() => {
            return Err(format!(
                "the {NAME} header is required for {method} in this revision"
            ));
        }
        (None, _) => {}
    }
    Ok(())
}

/// A header value as MCP encodes it: as is, or `=?base64?…?=` for what a header cannot
/// carry. `None` for a malformed encoding, which then matches nothing.
fn decode(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    let bytes = STANDARD.decode(payload).ok()?;
    // Only the canonical encoding, as the encoder writes it.
    if STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn headers_must_say_what_the_body_says() {
        let params = json!({"name": "echo", "_meta": {PROTOCOL_VERSION_META: "2026-07-28"}});
        let good = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ]);
        assert_eq!(revision(&good, Some(&params)), Revision::Stateless);
        assert_eq!(
            check(&good, Revision::Stateless, "tools/call", Some(&params)),
            Ok(())
        );
        let encoded = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ]);
        assert_eq!(
            check(&encoded, Revision::Stateless, "tools/call", Some(&params)),
            Ok(())
        );
        for (bad, says) in [
            (
                headers(&[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                    ("mcp-name", "echo"),
                ]),
                "mcp-method header does not match",
            ),
            (
                headers(&[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "get-env"),
                ]),
                "mcp-name header does not match",
            ),
            (
                headers(&[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                ]),
                "mcp-name header is required",
            ),
            (
                headers(&[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ]),
                "more than once",
            ),
            (
                headers(&[
                    ("mcp-protocol-version", "2025-11-25"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ]),
                "protocol version",
            ),
        ] {
            let why = check(&bad, Revision::Stateless, "tools/call", Some(&params)).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
        // In a session-based revision the headers are optional, but never contradict.
        let legacy = json!({"name": "echo"});
        assert_eq!(
            check(
                &HeaderMap::new(),
                Revision::Sessions,
                "tools/call",
                Some(&legacy)
            ),
            Ok(())
        );
        assert!(
            check(
                &headers(&[("mcp-name", "get-env")]),
                Revision::Sessions,
                "tools/call",
                Some(&legacy)
            )
            .is_err()
        );
        assert!(
            check(
                &headers(&[("mcp-name", "x")]),
                Revision::Sessions,
                "tools/list",
                None
            )
            .is_err()
        );
        assert_eq!(decode("=?base64?ZWNobw?="), None);
    }
}
