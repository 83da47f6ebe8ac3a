//! Promotion and demotion as a source edit (DESIGN §4): the one change that sets a rule's
//! `@mode` in its `.cedar` file, or a default-deny scope's mode in `arbiter.toml`, with
//! every other byte of the file kept, so that the change is a small, reviewable git diff.
//!
//! Everything here is a pure function of the pack and its files: no store, no clock. Who
//! promoted what and why is recorded by the caller. Before an [`Edit`] is handed out it
//! is checked the way `arbiter validate` would: a copy of the pack with the edit applied
//! must load, with the target in the new mode.

use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arbiter_core::Pack;
use arbiter_core::fs::{FileMode, IfExists, write_atomic};
use arbiter_core::rule::{Kind, Mode, RuleRef};
use cedar_policy::Policy;
use toml_edit::{Decor, DocumentMut, InlineTable, Item, Key, Table, Value};

/// The file default-deny scopes are configured in.
const CONFIG_FILE: &str = "arbiter.toml";

/// The change to one file of the pack that sets a target's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The file, relative to the pack.
    pub file: PathBuf,
    /// Its text as read (empty when the file does not exist yet).
    pub before: String,
    /// Its text with the new mode.
    pub after: String,
    /// The target's mode before the edit.
    pub from: Mode,
    /// The target's mode after it.
    pub to: Mode,
}

impl Edit {
    /// The edit that undoes this one, once it is written: the same file back to `before`.
    pub fn reversed(&self) -> Edit {
        Edit {
            file: self.file.clone(),
            before: self.after.clone(),
            after: self.before.clone(),
            from: self.to,
            to: self.from,
        }
    }

    /// A unified diff of the change with 3 lines of context, as git shows it.
    pub fn diff(&self) -> String {
        let name = slash_path(&self.file);
        similar::TextDiff::from_lines(&self.before, &self.after)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{name}"), &format!("b/{name}"))
            .to_string()
    }

    /// Writes the new text into the pack in `pack_dir`, atomically: a temporary file in the
    /// same directory, with the file's permissions, renamed over it. A reader (a server
    /// watching the pack) sees the old text or the new one, never half of each. A file the
    /// edit creates gets the mode any new file gets, and is never written over a file that
    /// appeared since it was found missing.
    ///
    /// Refuses when the file no longer holds `before`: someone changed it since the edit
    /// was computed, and writing would undo their change.
    pub fn write(&self, pack_dir: &Path) -> io::Result<()> {
        let path = pack_dir.join(&self.file);
        let current = match read_pack_file(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if current.as_deref().unwrap_or_default() != self.before {
            return Err(io::Error::other(format!(
                "{} changed since the edit was computed: compute it again",
                path.display()
            )));
        }
        if current.is_none() {
            // A new file: never over one that appeared since it was found missing.
            return write_atomic(
                &path,
                self.after.as_bytes(),
                FileMode::Default,
                IfExists::Fail,
            );
        }
        // Through a symlink, the file it points to is the one to replace.
        let path = fs::canonicalize(&path)?;
        let permissions = fs::metadata(&path)?.permissions();
        write_atomic(
            &path,
            self.after.as_bytes(),
            FileMode::Same(permissions),
            IfExists::Replace,
        )
    }
}

/// Why a mode cannot be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromoteError {
    /// No rule has this `@id`.
    #[error("no rule `{0}` in the pack")]
    UnknownRule(String),
    /// The rule is a permit: permits widen access and have no mode.
    #[error(
        "`{0}` is a permit: permits widen access and have no mode (the restriction an \
         allow-list creates is its default-deny scope, `default-deny:<PrincipalType>`)"
    )]
    Permit(String),
    /// The target is already in the mode asked for.
    #[error("`{target}` is already in {mode}")]
    AlreadyInMode {
        /// The rule id or scope name.
        target: String,
        /// Its mode.
        mode: Mode,
    },
    /// No default-deny scope has this name.
    #[error(
        "no default-deny scope `{0}` in the pack (there is one, `default-deny:<PrincipalType>`, \
         for each principal type of the schema)"
    )]
    UnknownScope(String),
    /// A file of the pack could not be read, or the copy used for the check could not be
    /// made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The file could not be read as a pack file: the policy or the table to edit was not
    /// found where the pack says it is.
    #[error("{}: {cause}", file.display())]
    Unparsable {
        /// The file, relative to the pack.
        file: PathBuf,
        /// What could not be read.
        cause: SourceError,
    },
    /// The pack with the edit applied does not load, or does not have the target in the
    /// new mode. This is a bug in the edit, never something to force through.
    #[error("the edit to {} was not written: {message}", file.display())]
    Rejected {
        /// The file, relative to the pack.
        file: PathBuf,
        /// What `arbiter validate` would say about the result.
        message: String,
    },
}

/// Why the text of a pack file could not be edited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A Cedar string literal runs to the end of the file.
    #[error("a string starting at byte {0} is never closed")]
    UnclosedString(usize),
    /// An `@` without a name after it.
    #[error("`@` at byte {0} is not followed by a name")]
    NamelessAnnotation(usize),
    /// An annotation whose value is not one string in parentheses.
    #[error("@{name} at byte {at} is not `@{name}(\"…\")`")]
    MalformedAnnotation {
        /// The annotation's name.
        name: String,
        /// Where its `@` is.
        at: usize,
    },
    /// Two policies of the file have the id.
    #[error("two policies have @id(\"{0}\")")]
    DuplicateId(String),
    /// No policy of the file has the id.
    #[error("no policy with @id(\"{0}\")")]
    NoPolicy(String),
    /// `@mode` without a value.
    #[error("the @mode of `{0}` has no value: write @mode(\"…\")")]
    ModeWithoutValue(String),
    /// The policy found by its id has no `@id` annotation to add `@mode` after.
    #[error("the policy `{0}` has no @id annotation")]
    NoIdAnnotation(String),
    /// The edit would split a character.
    #[error("an edit inside a character")]
    InsideCharacter,
    /// `arbiter.toml` is not TOML.
    #[error("not valid TOML: {0}")]
    Toml(toml_edit::TomlError),
    /// A key that must hold a table holds something else.
    #[error("`{0}` is not a table")]
    NotATable(&'static str),
    /// A principal type's mode is not a value.
    #[error("`[default_deny] principal_types.{0}` is not a value")]
    NotAValue(String),
}

/// The edit that sets the mode of `target` to `to`, checked by loading a copy of the pack
/// with it applied. Nothing is written: see [`Edit::write`].
pub fn set_mode(pack: &Pack, target: &RuleRef, to: Mode) -> Result<Edit, PromoteError> {
    let edit = match target {
        RuleRef::Rule(id) => rule_edit(pack, id, to)?,
        RuleRef::DefaultDeny(ty) => scope_edit(pack, target, ty, to)?,
    };
    check(pack, target, &edit)?;
    Ok(edit)
}

fn rule_edit(pack: &Pack, id: &str, to: Mode) -> Result<Edit, PromoteError> {
    let rule = pack
        .rule(id)
        .ok_or_else(|| PromoteError::UnknownRule(id.to_owned()))?;
    if rule.kind == Kind::Permit {
        return Err(PromoteError::Permit(id.to_owned()));
    }
    let from = rule.mode.unwrap_or(pack.config().defaults.mode);
    if from == to {
        return Err(PromoteError::AlreadyInMode {
            target: id.to_owned(),
            mode: from,
        });
    }
    let before = read(pack.dir(), &rule.file)?;
    let after =
        cedar_text::set_mode(&before, id, to).map_err(|cause| PromoteError::Unparsable {
            file: rule.file.clone(),
            cause,
        })?;
    if after == before {
        // The file already says `to`: the pack was loaded before someone changed it.
        return Err(PromoteError::AlreadyInMode {
            target: id.to_owned(),
            mode: to,
        });
    }
    Ok(Edit {
        file: rule.file.clone(),
        before,
        after,
        from,
        to,
    })
}

fn scope_edit(
    pack: &Pack,
    scope: &RuleRef,
    principal_type: &str,
    to: Mode,
) -> Result<Edit, PromoteError> {
    let scopes = pack.default_deny_scopes();
    let from = *scopes
        .get(principal_type)
        .ok_or_else(|| PromoteError::UnknownScope(scope.to_string()))?;
    if from == to {
        return Err(PromoteError::AlreadyInMode {
            target: scope.to_string(),
            mode: from,
        });
    }
    let file = PathBuf::from(CONFIG_FILE);
    // A pack may have no arbiter.toml (the defaults apply): the edit creates it.
    let before = match read(pack.dir(), &file) {
        Err(PromoteError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            String::new()
        }
        other => other?,
    };
    let after = config_text::set_scope_mode(&before, principal_type, to).map_err(|cause| {
        PromoteError::Unparsable {
            file: file.clone(),
            cause,
        }
    })?;
    Ok(Edit {
        file,
        before,
        after,
        from,
        to,
    })
}

fn read(pack_dir: &Path, file: &Path) -> Result<String, PromoteError> {
    let path = pack_dir.join(file);
    read_pack_file(&path).map_err(io_error(&path))
}

/// A pack file, read as the loader reads it (a regular file, bounded), as an I/O result.
fn read_pack_file(path: &Path) -> io::Result<String> {
    arbiter_core::pack::file::read(path).map_err(|e| match e {
        arbiter_core::pack::file::FileError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })
}

/// Places an I/O error at its path.
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PromoteError {
    let path = path.to_owned();
    move |source| PromoteError::Io { path, source }
}

/// Loads a copy of the pack with the edit applied: the result must pass `arbiter validate`
/// and have the target in the new mode.
fn check(pack: &Pack, target: &RuleRef, edit: &Edit) -> Result<(), PromoteError> {
    let copy = tempfile::Builder::new()
        .prefix("arbiter-promote-check-")
        .tempdir()
        .map_err(io_error(&std::env::temp_dir()))?;
    copy_dir(pack.dir(), copy.path(), 0)?;
    let written = copy.path().join(&edit.file);
    fs::write(&written, &edit.after).map_err(io_error(&written))?;
    let rejected = |message: String| PromoteError::Rejected {
        file: edit.file.clone(),
        message,
    };
    let loaded = Pack::load(copy.path())
        .map_err(|problems| rejected(format!("the pack would not load:\n{problems}")))?;
    let now = match target {
        RuleRef::Rule(id) => loaded.rule(id).and_then(|r| r.mode),
        RuleRef::DefaultDeny(ty) => loaded.default_deny_scopes().get(ty).copied(),
    };
    if now != Some(edit.to) {
        let now = now.map_or_else(|| "no mode".to_owned(), |m| m.to_string());
        return Err(rejected(format!(
            "`{target}` would be in {now}, not {}",
            edit.to
        )));
    }
    Ok(())
}

/// How deep the pack copy follows directories before suspecting a symlink loop.
const MAX_DEPTH: usize = 32;

/// Copies the pack's files (following symlinks, leaving out `.git`) for the check.
fn copy_dir(from: &Path, to: &Path, depth: usize) -> Result<(), PromoteError> {
    if depth > MAX_DEPTH {
        return Err(PromoteError::Io {
            path: from.to_owned(),
            source: io::Error::other("directories nested too deep (a symlink loop?)"),
        });
    }
    fs::create_dir_all(to).map_err(io_error(to))?;
    for entry in fs::read_dir(from).map_err(io_error(from))? {
        let entry = entry.map_err(io_error(from))?;
        if entry.file_name() == ".git" {
            continue;
        }
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = fs::metadata(&source).map_err(io_error(&source))?;
        if meta.is_dir() {
            copy_dir(&source, &target, depth + 1)?;
        } else if meta.is_file() {
            fs::copy(&source, &target).map_err(io_error(&source))?;
        }
    }
    Ok(())
}

/// A relative path as git prints it in a diff header.
fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Editing a `.cedar` file: find the policy by its `@id` and set its `@mode`, touching
/// only the bytes of that annotation.
mod cedar_text {
    use super::{Mode, Policy, Range, SourceError};

    /// A token of Cedar source that matters for finding annotations. Whitespace and `//`
    /// comments are skipped, and a string is one token, so text inside either is never
    /// mistaken for an annotation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Token {
        /// A string literal, quotes included.
        Str,
        /// An identifier or keyword.
        Word,
        /// Any other character.
        Punct(char),
    }

    #[derive(Debug, Clone)]
    struct Spanned {
        token: Token,
        span: Range<usize>,
    }

    fn tokens(src: &str) -> Result<Vec<Spanned>, SourceError> {
        let mut out = Vec::new();
        let mut chars = src.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c.is_whitespace() {
                continue;
            }
            if c == '/' && chars.peek().is_some_and(|&(_, n)| n == '/') {
                while chars.next_if(|&(_, n)| n != '\n').is_some() {}
                continue;
            }
            if c == '"' {
                let mut end = None;
                while let Some((at, n)) = chars.next() {
                    match n {
                        '\\' => {
                            chars.next();
                        }
                        '"' => {
                            end = Some(at + 1);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or(SourceError::UnclosedString(start))?;
                out.push(Spanned {
                    token: Token::Str,
                    span: start..end,
                });
                continue;
            }
            if c.is_alphanumeric() || c == '_' {
                let mut end = start + c.len_utf8();
                while let Some((at, n)) = chars.next_if(|&(_, n)| n.is_alphanumeric() || n == '_') {
                    end = at + n.len_utf8();
                }
                out.push(Spanned {
                    token: Token::Word,
                    span: start..end,
                });
                continue;
            }
            out.push(Spanned {
                token: Token::Punct(c),
                span: start..start + c.len_utf8(),
            });
        }
        Ok(out)
    }

    /// One `@name` or `@name("value")` annotation.
    #[derive(Debug)]
    struct Annotation {
        name: String,
        /// From `@` to the closing `)` (or the name, without a value).
        span: Range<usize>,
        /// The string literal, quotes included.
        value: Option<Range<usize>>,
    }

    /// One policy: its annotations and where its text is.
    #[derive(Debug)]
    struct PolicyText {
        /// From the end of the previous policy to this one's `;`: what Cedar parses.
        text: Range<usize>,
        annotations: Vec<Annotation>,
        /// Where the first token after the annotations (`permit` or `forbid`) starts.
        head: usize,
    }

    fn policies(src: &str) -> Result<Vec<PolicyText>, SourceError> {
        let tokens = tokens(src)?;
        let mut out = Vec::new();
        let mut start = 0;
        for policy in tokens.split_inclusive(|t| t.token == Token::Punct(';')) {
            let Some(last) = policy.last() else { continue };
            let (annotations, rest) = annotations(src, policy)?;
            let head = rest.first().map_or(last.span.start, |t| t.span.start);
            out.push(PolicyText {
                text: start..last.span.end,
                annotations,
                head,
            });
            start = last.span.end;
        }
        Ok(out)
    }

    /// The annotations that open a policy, and the tokens after them.
    fn annotations<'t>(
        src: &str,
        policy: &'t [Spanned],
    ) -> Result<(Vec<Annotation>, &'t [Spanned]), SourceError> {
        let mut out = Vec::new();
        let mut rest = policy;
        while let [at, name, after @ ..] = rest {
            if at.token != Token::Punct('@') {
                break;
            }
            if name.token != Token::Word {
                return Err(SourceError::NamelessAnnotation(at.span.start));
            }
            let name_text = src.get(name.span.clone()).unwrap_or_default().to_owned();
            match after {
                [open, value, close, tail @ ..] if open.token == Token::Punct('(') => {
                    if value.token != Token::Str || close.token != Token::Punct(')') {
                        return Err(SourceError::MalformedAnnotation {
                            name: name_text,
                            at: at.span.start,
                        });
                    }
                    out.push(Annotation {
                        name: name_text,
                        span: at.span.start..close.span.end,
                        value: Some(value.span.clone()),
                    });
                    rest = tail;
                }
                _ => {
                    out.push(Annotation {
                        name: name_text,
                        span: at.span.start..name.span.end,
                        value: None,
                    });
                    rest = after;
                }
            }
        }
        Ok((out, rest))
    }

    /// `src` with the `@mode` of the policy whose `@id` is `id` set to `to`: its value
    /// rewritten when it has one, else `@mode("…")` added on its own line after `@id`.
    pub(super) fn set_mode(src: &str, id: &str, to: Mode) -> Result<String, SourceError> {
        let mut found = None;
        for policy in policies(src)? {
            let text = src.get(policy.text.clone()).unwrap_or_default();
            // Cedar reads the id (escapes and all), so it matches what the pack loaded.
            let Ok(parsed) = Policy::parse(None, text) else {
                continue;
            };
            if parsed.annotation("id") == Some(id) {
                if found.is_some() {
                    return Err(SourceError::DuplicateId(id.to_owned()));
                }
                found = Some(policy);
            }
        }
        let policy = found.ok_or_else(|| SourceError::NoPolicy(id.to_owned()))?;
        let literal = format!("\"{}\"", to.as_str());
        let annotation = |name: &str| policy.annotations.iter().find(|a| a.name == name);
        let (at, insert) = match annotation("mode") {
            Some(mode) => {
                let value = mode
                    .value
                    .clone()
                    .ok_or_else(|| SourceError::ModeWithoutValue(id.to_owned()))?;
                (value, literal)
            }
            None => {
                let id_annotation =
                    annotation("id").ok_or_else(|| SourceError::NoIdAnnotation(id.to_owned()))?;
                added_mode(src, id_annotation, policy.head, &literal)
            }
        };
        let before = src.get(..at.start).ok_or(SourceError::InsideCharacter)?;
        let after = src.get(at.end..).ok_or(SourceError::InsideCharacter)?;
        Ok(format!("{before}{insert}{after}"))
    }

    /// Where and what to insert to add `@mode(literal)` after the `@id` annotation: on a
    /// line of its own, indented like the `@id` line and ending like it (`\n` or `\r\n`);
    /// on the same line when the policy's head shares the `@id` line.
    fn added_mode(
        src: &str,
        id: &Annotation,
        head: usize,
        literal: &str,
    ) -> (Range<usize>, String) {
        let line_start = src
            .get(..id.span.start)
            .and_then(|s| s.rfind('\n'))
            .map_or(0, |nl| nl + 1);
        let indent: String = src
            .get(line_start..)
            .unwrap_or_default()
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        let newline = src
            .get(id.span.end..)
            .and_then(|s| s.find('\n'))
            .map(|at| id.span.end + at);
        match newline {
            Some(nl) if head > nl => {
                let crlf = src.get(..nl).is_some_and(|s| s.ends_with('\r'));
                let eol = if crlf { "\r\n" } else { "\n" };
                (nl + 1..nl + 1, format!("{indent}@mode({literal}){eol}"))
            }
            _ => (id.span.end..id.span.end, format!(" @mode({literal})")),
        }
    }
}

/// Editing `arbiter.toml` with `toml_edit`, so comments, formatting and key order stay.
mod config_text {
    use super::{Decor, DocumentMut, InlineTable, Item, Key, Mode, SourceError, Table, Value};

    /// `src` with `[default_deny] principal_types.<principal_type>` set to `to`, written
    /// explicitly even when it equals the section's `mode`: explicit is reviewable.
    pub(super) fn set_scope_mode(
        src: &str,
        principal_type: &str,
        to: Mode,
    ) -> Result<String, SourceError> {
        let out = edited(src, principal_type, to)?;
        // `toml_edit` keeps the file's own line endings but writes new lines with `\n`.
        let crlf = src.contains("\r\n") && src.matches('\n').count() == src.matches("\r\n").count();
        Ok(if crlf {
            out.replace("\r\n", "\n").replace('\n', "\r\n")
        } else {
            out
        })
    }

    fn edited(src: &str, principal_type: &str, to: Mode) -> Result<String, SourceError> {
        let mut doc: DocumentMut = src.parse().map_err(SourceError::Toml)?;
        let root = doc.as_table_mut();
        if !root.contains_key("default_deny") {
            let mut section = Table::new();
            if !src.trim().is_empty() {
                section.decor_mut().set_prefix("\n");
            }
            root.insert("default_deny", Item::Table(section));
        }
        let section = root
            .get_mut("default_deny")
            .and_then(Item::as_table_like_mut)
            .ok_or(SourceError::NotATable("default_deny"))?;
        let value = Value::from(to.as_str());
        let Some(types) = section.get_mut("principal_types") else {
            let mut types = InlineTable::new();
            types.insert(principal_type, value);
            section.insert("principal_types", Item::Value(Value::InlineTable(types)));
            return Ok(doc.to_string());
        };
        if let Some(Value::InlineTable(types)) = types.as_value_mut() {
            set_in_inline(types, principal_type, value);
            return Ok(doc.to_string());
        }
        let types = types
            .as_table_like_mut()
            .ok_or(SourceError::NotATable("[default_deny] principal_types"))?;
        match types.get_mut(principal_type) {
            Some(item) => {
                let old = item
                    .as_value_mut()
                    .ok_or_else(|| SourceError::NotAValue(principal_type.to_owned()))?;
                replace_keeping_decor(old, value);
            }
            None => {
                types.insert(principal_type, Item::Value(value));
            }
        }
        Ok(doc.to_string())
    }

    /// Replaces a value, keeping the spaces and comment around it.
    fn replace_keeping_decor(old: &mut Value, mut new: Value) {
        *new.decor_mut() = old.decor().clone();
        *old = new;
    }

    /// Sets a key of an inline table; a new key is appended in the style of the last one
    /// (`{ A = "x", B = "y" }`, `{A="x", B="y"}`), one per line when they are.
    fn set_in_inline(types: &mut InlineTable, key: &str, value: Value) {
        if let Some(old) = types.get_mut(key) {
            replace_keeping_decor(old, value);
            return;
        }
        let last = types.iter().last().map(|(k, _)| k.to_owned());
        let Some(last) = last else {
            types.insert(key, value);
            return;
        };
        let raw = |decor: Option<&Decor>, prefix: bool| -> String {
            decor
                .and_then(|d| if prefix { d.prefix() } else { d.suffix() })
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let last_key = types.key(&last).map(Key::leaf_decor);
        let key_prefix = raw(last_key, true);
        let key_prefix = if key_prefix.contains('\n') {
            key_prefix
        } else {
            " ".to_owned()
        };
        let key_suffix = raw(last_key, false);
        let last_value = types.get(&last).map(Value::decor);
        let value_prefix = raw(last_value, true);
        let mut value_suffix = raw(last_value, false);
        if value_suffix.trim().is_empty() {
            // The space before `}` moves after the new last value.
            if let Some(old) = types.get_mut(&last) {
                old.decor_mut().set_suffix("");
            }
        } else {
            value_suffix = String::new();
        }
        let mut new_key = Key::new(key);
        *new_key.leaf_decor_mut() = Decor::new(key_prefix, key_suffix);
        let mut value = value;
        *value.decor_mut() = Decor::new(value_prefix, value_suffix);
        types.insert_formatted(&new_key, value);
    }
}
