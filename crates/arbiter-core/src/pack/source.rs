//! Splits a `.cedar` file into its policies, so that each one is parsed on its own and
//! every problem can be placed at its file and line.
//!
//! In Cedar a `;` outside strings and comments ends a policy, so the split only has to
//! know strings (with escapes) and `//` comments.

/// One policy's text within its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    /// The text from the end of the previous policy up to and including this one's `;`.
    pub text: &'a str,
    /// Byte offset of `text` in the file.
    pub start: usize,
    /// Byte offset (in the file) of the policy's first token.
    pub first_token: usize,
}

/// What Cedar text holds outside its `//` comments: code, byte by byte, and string
/// literals (with their escapes), each as one piece. The one scanner that both the split
/// and the bound on nesting read, so the two cannot disagree on what is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// A byte of code.
    Code(u8),
    /// A whole string literal.
    Literal,
}

/// The pieces of `src` with their byte offsets.
fn pieces(src: &str) -> impl Iterator<Item = (usize, Piece)> + '_ {
    let bytes = src.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        loop {
            let at = i;
            let b = *bytes.get(at)?;
            if b == b'/' && bytes.get(at + 1) == Some(&b'/') {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            i += 1;
            if b != b'"' {
                return Some((at, Piece::Code(b)));
            }
            while let Some(&c) = bytes.get(i) {
                match c {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            i += 1;
            return Some((at, Piece::Literal));
        }
    })
}

/// The policies of `src`, in order. Text after the last `;` that is not blank or a comment
/// is returned as a final chunk (it will fail to parse with Cedar's own message).
pub(crate) fn split(src: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut first_token: Option<usize> = None;
    for (at, piece) in pieces(src) {
        match piece {
            Piece::Code(b';') => {
                let end = at + 1;
                chunks.push(Chunk {
                    text: src.get(start..end).unwrap_or_default(),
                    start,
                    first_token: first_token.unwrap_or(at),
                });
                start = end;
                first_token = None;
            }
            Piece::Code(c) if c.is_ascii_whitespace() => {}
            Piece::Code(_) | Piece::Literal => {
                first_token.get_or_insert(at);
            }
        }
    }
    if let Some(first) = first_token {
        chunks.push(Chunk {
            text: src.get(start..).unwrap_or_default(),
            start,
            first_token: first,
        });
    }
    chunks
}

/// The `@id("…")` a policy's text declares, read without parsing it (for a policy refused
/// before Cedar reads it).
pub(crate) fn declared_id(chunk: &str) -> Option<&str> {
    let at = chunk.find("@id(\"")? + 5;
    let rest = chunk.get(at..)?;
    rest.get(..rest.find('"')?)
}

/// The most brackets (`(`, `[`, `{`) one policy may nest.
pub(crate) const MAX_NESTING: usize = 64;

/// The most operators (each a level an expression may nest: `&&`, `+`, `!`, `.`, `if`,
/// `has`, `like`, brackets, …) one policy may hold. Cedar's parser and its JSON form
/// recurse once per level, on the stack; a policy past this is refused before Cedar
/// reads it. A real policy holds tens; a longer one is better written with a set
/// (`["a", "b"].contains(x)`) or split.
pub(crate) const MAX_OPERATORS: usize = 1_000;

/// Why a policy's text is refused before Cedar parses it: a byte offset in the chunk and
/// the message.
pub(crate) fn too_deep(chunk: &str) -> Option<(usize, String)> {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut word: Option<usize> = None;
    let mut previous: Option<u8> = None;
    for (at, piece) in pieces(chunk).chain(std::iter::once((chunk.len(), Piece::Code(b' ')))) {
        let byte = match piece {
            Piece::Code(b) => Some(b),
            Piece::Literal => None,
        };
        let in_word = byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        match (word, in_word) {
            (None, true) => word = Some(at),
            (Some(from), false) => {
                let keyword = chunk.get(from..at).unwrap_or_default();
                if matches!(
                    keyword,
                    "if" | "then" | "else" | "has" | "like" | "is" | "in"
                ) {
                    operators += 1;
                }
                word = None;
            }
            _ => {}
        }
        match byte {
            Some(b'(' | b'[' | b'{') => {
                depth += 1;
                operators += 1;
                if depth > MAX_NESTING {
                    return Some((
                        at,
                        format!(
                            "brackets nest more than {MAX_NESTING} deep: arbiter refuses such a \
                             policy before parsing it (it would exhaust the parser's stack)"
                        ),
                    ));
                }
            }
            Some(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            // `&&`, `==`, `<=` are one operator each.
            Some(b @ (b'&' | b'|' | b'='))
                if previous.is_some_and(|p| {
                    matches!(p, b'&' | b'|' | b'=' | b'<' | b'>' | b'!') && (p == b || b == b'=')
                }) => {}
            Some(b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.') => {
                operators += 1;
            }
            _ => {}
        }
        previous = byte;
        if operators > MAX_OPERATORS {
            return Some((
                at,
                format!(
                    "more than {MAX_OPERATORS} operators in one policy: arbiter refuses such a \
                     policy before parsing it (it would exhaust the parser's stack); use a set \
                     (`[\"a\", \"b\"].contains(x)`) or split the policy"
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_long_expressions_are_refused_and_strings_and_comments_do_not_count() {
        let deep = format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(100),
            ")".repeat(100)
        );
        assert!(too_deep(&deep).is_some_and(|(_, m)| m.contains("nest")));
        let long = format!(
            "permit(principal, action, resource) when {{ {} == 1 }};",
            vec!["1"; 2_000].join(" + ")
        );
        assert!(too_deep(&long).is_some_and(|(_, m)| m.contains("operators")));
        let quoted = format!(
            "// {}\npermit(principal, action, resource) when {{ \"{}\" == \"x\" }};",
            "(".repeat(500),
            "((((+".repeat(500)
        );
        assert_eq!(too_deep(&quoted), None);
        let real = "@id(\"a\")\nforbid(principal, action, resource) when { \
                    context has x && (context.x like \"*.internal\" || !(context.y in [1, 2])) };";
        assert_eq!(too_deep(real), None);
    }

    #[test]
    fn splits_on_semicolons_outside_strings_and_comments() {
        let src = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\
                   forbid(principal, action, resource) when { \"x\\\";\" == \"y\" };\n// end;\n";
        let chunks = split(src);
        assert_eq!(chunks.len(), 2);
        let first = chunks.first().expect("two chunks");
        assert!(first.text.ends_with("resource);"));
        assert_eq!(
            src.get(first.first_token..first.first_token + 3),
            Some("@id")
        );
        let second = chunks.get(1).expect("two chunks");
        assert!(second.text.trim_start().starts_with("forbid"));
        assert!(second.text.ends_with("};"));
    }

    #[test]
    fn trailing_text_is_a_chunk() {
        let chunks = split("permit(principal, action, resource);\npermit(principal");
        assert_eq!(chunks.len(), 2);
        assert_eq!(split("  // nothing\n").len(), 0);
    }
}
