//! JSON-RPC 2.0 as the proxy reads it: one message a line (MCP's stdio framing), at most
//! a bounded number of bytes, parsed strictly (a duplicate key is refused at any depth,
//! so the proxy and the server cannot read two different messages from one line), and
//! classified without being rewritten: what is forwarded is the line as it came.

use std::fmt;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The largest message read by default, in bytes (4 MiB): room for a tool result with an
/// image or a file in it, and a bound on what one line can make the proxy hold.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// JSON-RPC's own error codes.
pub mod code {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC message the proxy accepts.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist, or is not answered.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method's parameters are not what it takes.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The proxy could not do what was asked (the server is gone, the log is down).
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// One line read from a peer.
#[derive(Debug)]
pub enum Line {
    /// A line's bytes, without its line ending.
    Message(Vec<u8>),
    /// A line longer than the limit; its bytes were read and dropped.
    TooLong,
    /// The peer closed its end.
    Closed,
}

/// Reads the next non-blank line, holding at most `max` bytes of it: a longer line is
/// read to its end and dropped ([`Line::TooLong`]), so one message can neither exhaust
/// memory nor desynchronise the stream.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                // The end of the stream: an unterminated last line still counts.
                if line.is_empty() && !too_long {
                    return Ok(Line::Closed);
                }
                break;
            }
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (available.get(..at).unwrap_or_default(), Some(at)),
                None => (available, None),
            };
            if !too_long {
                if line.len() + chunk.len() > max {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let used = found.map_or(available.len(), |at| at + 1);
            reader.consume(used);
            if found.is_some() {
                break;
            }
        }
        if too_long {
            return Ok(Line::TooLong);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(Line::Message(line));
    }
}

/// A request id as a peer wrote it: a string or an integer (MCP never uses `null`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Id(IdValue);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum IdValue {
    Text(String),
    Integer(i128),
}

impl Id {
    fn read(value: &Value) -> Option<Id> {
        match value {
            Value::String(s) => Some(Id(IdValue::Text(s.clone()))),
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map(|n| Id(IdValue::Integer(n))),
            _ => None,
        }
    }

    /// A string id, for a request the proxy sends itself.
    pub fn text(text: &str) -> Id {
        Id(IdValue::Text(text.to_owned()))
    }

    /// An integer id, for a request arbiter's client sends.
    pub fn integer(n: i64) -> Id {
        Id(IdValue::Integer(i128::from(n)))
    }

    /// The id as JSON, for an answer that echoes it.
    pub fn to_value(&self) -> Value {
        match &self.0 {
            IdValue::Text(s) => Value::String(s.clone()),
            IdValue::Integer(n) => i64::try_from(*n)
                .map(Value::from)
                .or_else(|_| u64::try_from(*n).map(Value::from))
                .unwrap_or(Value::Null),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IdValue::Text(s) => write!(f, "{}", Value::String(s.clone())),
            IdValue::Integer(n) => write!(f, "{n}"),
        }
    }
}

/// A message, classified: what the proxy needs to route it, nothing rewritten.
#[derive(Debug)]
pub enum Message {
    /// A request: it expects a response with the same id.
    Request {
        /// Its id.
        id: Id,
        /// Its method.
        method: String,
        /// Its parameters, when it has some.
        params: Option<Value>,
    },
    /// A notification: no response.
    Notification {
        /// Its method.
        method: String,
    },
    /// A response (a result or an error) to a request with this id.
    Response {
        /// The id it answers; `None` for an error response to a message that had no
        /// readable id.
        id: Option<Id>,
    },
}

/// Why a line is not a message the proxy accepts.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not JSON (or a key given twice). Never quotes the line.
    #[error("not a JSON message ({0})")]
    Parse(String),
    /// A JSON array: MCP sends one message at a time (batches were removed in 2025-06-18).
    #[error("a batch (a JSON array) is not accepted: send one message a line")]
    Batch,
    /// JSON, but not a JSON-RPC 2.0 message; `id` when the message had a readable one.
    #[error("{why}")]
    Invalid {
        /// The message's id, when readable.
        id: Option<Id>,
        /// What is wrong, naming fields, never values.
        why: String,
    },
}

/// Reads one line as a message.
pub fn read(line: &[u8]) -> Result<Message, Refused> {
    let value = arbiter_core::json::from_slice(line).map_err(|e| {
        // serde_json's message names the place (line, column) and the kind of error.
        Refused::Parse(e.to_string())
    })?;
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => return Err(Refused::Batch),
        other => {
            return Err(Refused::Invalid {
                id: None,
                why: format!(
                    "a JSON-RPC message is an object, not {}",
                    arbiter_core::json::kind_of(&other)
                ),
            });
        }
    };
    classify(object)
}

fn classify(mut object: Map<String, Value>) -> Result<Message, Refused> {
    let raw_id = object.remove("id");
    let id = raw_id.as_ref().and_then(Id::read);
    let invalid = |why: &str| Refused::Invalid {
        id: id.clone(),
        why: why.to_owned(),
    };
    if object.get("jsonrpc") != Some(&Value::String("2.0".to_owned())) {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    let has_result = object.contains_key("result");
    let has_error = object.contains_key("error");
    match object.remove("method") {
        Some(Value::String(method)) => {
            if has_result || has_error {
                return Err(invalid(
                    "a message with a `method` has no `result` or `error`",
                ));
            }
            let params = object.remove("params");
            if params.as_ref().is_some_and(|p| !p.is_object()) {
                return Err(invalid("`params` must be an object"));
            }
            match (&raw_id, id.clone()) {
                (None, _) => Ok(Message::Notification { method }),
                (Some(_), Some(id)) => Ok(Message::Request { id, method, params }),
                (Some(_), None) => Err(invalid("`id` must be a string or an integer")),
            }
        }
        Some(_) => Err(invalid("`method` must be a string")),
        None => match (has_result, has_error, &raw_id, id.clone()) {
            (true, true, _, _) => Err(invalid("a response has `result` or `error`, not both")),
            (false, false, _, _) => Err(invalid(
                "neither a request, a notification nor a response: no `method`, `result` or `error`",
            )),
            (_, true, Some(Value::Null), _) => Ok(Message::Response { id: None }),
            (_, _, Some(_), Some(id)) => Ok(Message::Response { id: Some(id) }),
            (_, _, _, _) => Err(invalid(
                "a response's `id` must be the string or integer of its request",
            )),
        },
    }
}

/// A response with this result, as a line.
pub fn result(id: &Id, result: Value) -> Vec<u8> {
    line(&json!({"jsonrpc": "2.0", "id": id.to_value(), "result": result}))
}

/// An error response, as a line; `id` is `null` when the message had no readable id.
pub fn error(id: Option<&Id>, code: i64, message: &str) -> Vec<u8> {
    error_with_data(id, code, message, None)
}

/// An error response with `data`, as a line.
pub fn error_with_data(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let id = id.map_or(Value::Null, Id::to_value);
    let mut error = json!({"code": code, "message": message});
    if let (Some(data), Some(object)) = (data, error.as_object_mut()) {
        object.insert("data".to_owned(), data);
    }
    line(&json!({"jsonrpc": "2.0", "id": id, "error": error}))
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "a test")]

    use super::*;

    fn refused(line: &str) -> Refused {
        match read(line.as_bytes()) {
            Err(r) => r,
            Ok(m) => panic!("{line} was read as {m:?}"),
        }
    }

    #[test]
    fn messages_are_classified() {
        match read(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#)
            .unwrap()
        {
            Message::Request { id, method, params } => {
                assert_eq!(id.to_string(), "7");
                assert_eq!(method, "tools/call");
                assert_eq!(params.unwrap()["name"], "x");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification { .. }
        ));
        assert!(matches!(
            read(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
            Message::Response { id: Some(_) }
        ));
        assert!(matches!(
            read(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).unwrap(),
            Message::Response { id: None }
        ));
    }

    #[test]
    fn what_is_not_a_message_is_refused_without_its_values() {
        assert!(matches!(refused("[1,2]"), Refused::Batch));
        assert!(matches!(refused("{\"a\":"), Refused::Parse(_)));
        let duplicate = refused(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok","name":"SECRET"}}"#,
        );
        assert!(matches!(duplicate, Refused::Parse(_)), "{duplicate:?}");
        assert!(!duplicate.to_string().contains("SECRET"), "{duplicate}");
        for (line, says) in [
            (r#"{"id":1,"method":"x"}"#, "`jsonrpc` must be \"2.0\""),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#, "`id` must be"),
            (
                r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
                "`id` must be",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                "`params`",
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, "neither a request"),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                "not both",
            ),
            (r#""SECRET""#, "an object, not a string"),
        ] {
            let why = refused(line).to_string();
            assert!(why.contains(says), "{line}: {why}");
            assert!(!why.contains("SECRET"), "{why}");
        }
    }

    #[test]
    fn ids_keep_their_type() {
        let text = Id::read(&json!("1")).unwrap();
        let number = Id::read(&json!(1)).unwrap();
        assert_ne!(text, number);
        assert_eq!(text.to_value(), json!("1"));
        assert_eq!(number.to_value(), json!(1));
        assert_eq!(
            Id::read(&json!(u64::MAX)).unwrap().to_value(),
            json!(u64::MAX)
        );
    }

    #[tokio::test]
    async fn lines_are_bounded_and_the_stream_stays_in_step() {
        let input = format!("{}\n\n  \r\n{}\r\nlast", "x".repeat(20), "y".repeat(5));
        let mut reader = tokio::io::BufReader::with_capacity(4, input.as_bytes());
        assert!(matches!(
            read_line(&mut reader, 10).await.unwrap(),
            Line::TooLong
        ));
        match read_line(&mut reader, 10).await.unwrap() {
            Line::Message(m) => assert_eq!(m, b"yyyyy"),
            other => panic!("{other:?}"),
        }
        match read_line(&mut reader, 10).await.unwrap() {
            Line::Message(m) => assert_eq!(m, b"last"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_line(&mut reader, 10).await.unwrap(),
            Line::Closed
        ));
    }
}
