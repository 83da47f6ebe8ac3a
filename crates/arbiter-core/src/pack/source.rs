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

/// The policies of `src`, in order. Text after the last `;` that is not blank or a comment
/// is returned as a final chunk (it will fail to parse with Cedar's own message).
pub(crate) fn split(src: &str) -> Vec<Chunk<'_>> {
    let bytes = src.as_bytes();
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut first_token: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                first_token.get_or_insert(i);
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b';' => {
                let end = i + 1;
                chunks.push(Chunk {
                    text: src.get(start..end).unwrap_or_default(),
                    start,
                    first_token: first_token.unwrap_or(i),
                });
                start = end;
                first_token = None;
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                first_token.get_or_insert(i);
            }
        }
        i += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

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
