//! Server-sent events as the proxy reads them: split into events as the bytes arrive, each
//! event's lines kept as they came (so `id:`, `event:` and `retry:` pass on untouched and a
//! client can resume), its `data` gathered for the proxy to read as one JSON-RPC message.
//! An event, or a line, longer than the limit is dropped whole; the stream stays in step.

/// One event: its lines as they came, and its `data` when it has some.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The event's lines, each with its line ending, without the blank line that ends it.
    pub lines: Vec<u8>,
    /// The `data` fields joined by `\n`, when the event has at least one.
    pub data: Option<Vec<u8>>,
}

impl Event {
    /// The event as bytes, with `data` replaced by `data` (every other line kept).
    pub fn with_data(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.len() + data.len() + 8);
        let mut wrote = false;
        for line in self.lines.split_inclusive(|b| *b == b'\n') {
            if field_of(trim_end(line)) == Some(b"data".as_slice()) {
                if !wrote {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(data);
                    out.push(b'\n');
                    wrote = true;
                }
            } else {
                out.extend_from_slice(line);
            }
        }
        if !wrote {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }

    /// The event as it came, ended by a blank line.
    pub fn as_is(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.lines.len() + 1);
        out.extend_from_slice(&self.lines);
        out.push(b'\n');
        out
    }
}

/// What the parser found in the bytes given to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole event.
    Event(Event),
    /// An event larger than the limit, dropped.
    TooLong,
}

/// An incremental parser of an event stream.
#[derive(Debug)]
pub struct Parser {
    max: usize,
    /// Bytes of a line not ended yet.
    pending: Vec<u8>,
    /// The current event's lines.
    lines: Vec<u8>,
    data: Option<Vec<u8>>,
    /// The current event is over the limit: skip to its end.
    skipping: bool,
    /// Bytes of the current line were dropped: it is not blank, whatever is left of it.
    dropped: bool,
}

impl Parser {
    /// A parser holding at most `max` bytes of one event.
    pub fn new(max: usize) -> Parser {
        Parser {
            max,
            pending: Vec::new(),
            lines: Vec::new(),
            data: None,
            skipping: false,
            dropped: false,
        }
    }

    /// Reads `chunk`, returning what it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Parsed> {
        let mut found = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    let (line, after) = rest.split_at(at + 1);
                    rest = after;
                    if self.skipping || self.pending.len() + line.len() > self.max {
                        let blank =
                            !self.dropped && self.pending.is_empty() && trim_end(line).is_empty();
                        self.pending.clear();
                        self.dropped = false;
                        self.skipping = true;
                        // A blank line ends the skipped event.
                        if blank {
                            self.end_skip(&mut found);
                        }
                        continue;
                    }
                    self.pending.extend_from_slice(line);
                    let line = std::mem::take(&mut self.pending);
                    self.line(line, &mut found);
                }
                None => {
                    if !self.skipping && self.pending.len() + rest.len() <= self.max {
                        self.pending.extend_from_slice(rest);
                    } else {
                        self.pending.clear();
                        self.skipping = true;
                        self.dropped = true;
                    }
                    rest = &[];
                }
            }
        }
        found
    }

    fn end_skip(&mut self, found: &mut Vec<Parsed>) {
        self.skipping = false;
        self.lines.clear();
        self.data = None;
        found.push(Parsed::TooLong);
    }

    fn line(&mut self, line: Vec<u8>, found: &mut Vec<Parsed>) {
        let text = trim_end(&line);
        if text.is_empty() {
            if !self.lines.is_empty() {
                found.push(Parsed::Event(Event {
                    lines: std::mem::take(&mut self.lines),
                    data: self.data.take(),
                }));
            }
            return;
        }
        if self.lines.len() + line.len() > self.max {
            self.skipping = true;
            self.lines.clear();
            self.data = None;
            return;
        }
        if field_of(text) == Some(b"data".as_slice()) {
            let value = value_of(text);
            match &mut self.data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => self.data = Some(value.to_vec()),
            }
        }
        self.lines.extend_from_slice(&line);
    }
}

/// A line without its `\n` or `\r\n`.
fn trim_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The field name of a line (`None` for a comment).
fn field_of(line: &[u8]) -> Option<&[u8]> {
    if line.first() == Some(&b':') {
        return None;
    }
    Some(match line.iter().position(|b| *b == b':') {
        Some(at) => line.get(..at).unwrap_or_default(),
        None => line,
    })
}

/// The value of a field line: after the colon and one optional space.
fn value_of(line: &[u8]) -> &[u8] {
    match line.iter().position(|b| *b == b':') {
        Some(at) => {
            let value = line.get(at + 1..).unwrap_or_default();
            value.strip_prefix(b" ").unwrap_or(value)
        }
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "a test")]

    use super::*;

    fn events(parsed: Vec<Parsed>) -> Vec<Event> {
        parsed
            .into_iter()
            .map(|p| match p {
                Parsed::Event(e) => e,
                Parsed::TooLong => panic!("too long"),
            })
            .collect()
    }

    #[test]
    fn events_are_split_across_chunks_and_keep_their_lines() {
        let mut parser = Parser::new(1024);
        let mut found = parser.push(b"id: 7\r\nevent: message\r\nda");
        assert!(found.is_empty());
        found.extend(parser.push(b"ta: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\n"));
        let found = events(found);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].data.as_deref(), Some(b"{\"a\":1}".as_slice()));
        assert_eq!(
            found[0].as_is(),
            b"id: 7\r\nevent: message\r\ndata: {\"a\":1}\r\n\n"
        );
        assert_eq!(
            found[0].with_data(b"{}"),
            b"id: 7\r\nevent: message\r\ndata: {}\n\n"
        );
        assert_eq!(found[1].data, None);
        assert_eq!(found[1].as_is(), b": ping\n\n");
        assert_eq!(found[2].data.as_deref(), Some(b"x\ny".as_slice()));
    }

    #[test]
    fn an_event_over_the_limit_is_dropped_and_the_next_one_read() {
        let mut parser = Parser::new(16);
        let mut found = parser.push(b"data: ");
        found.extend(parser.push(&[b'x'; 40]));
        found.extend(parser.push(b"\ndata: more\n\ndata: ok\n\n"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], Parsed::TooLong);
        match &found[1] {
            Parsed::Event(e) => assert_eq!(e.data.as_deref(), Some(b"ok".as_slice())),
            other => panic!("{other:?}"),
        }
    }
}
