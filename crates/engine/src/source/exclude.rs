//! Exclude patterns with the semantics of rsync's `--exclude`.
//!
//! A snapshot stores each source under its *absolute* path, so a pattern is
//! matched against the absolute path of every entry, exactly as
//! `rsync -a --relative /abs/source DEST/` does (its transfer root is `/`).
//! The rules, in rsync's words (`man rsync`, "PATTERN MATCHING RULES"):
//!
//! * **No slash** (not counting a trailing one) and no `**`: the pattern is
//!   matched against the final name only, at any depth. `node_modules`
//!   excludes every entry named `node_modules`.
//! * **A slash inside** (`a/b`): the pattern is matched against the tail of the
//!   path, starting at a component boundary. `.local/share/Trash` excludes
//!   `/home/alice/.local/share/Trash` but not `/home/alice/x.local/share/Trash`.
//! * **A leading slash**: the pattern is anchored at `/`, so
//!   `/home/alice/skip` excludes only that one path.
//! * **A trailing slash**: the pattern only matches directories (a symlink to a
//!   directory is not a directory). `build/` keeps a *file* named `build`.
//! * `*` matches any run of characters except `/`; `**` matches any run,
//!   slashes included, and may also appear inside a component (`a**z`); a
//!   pattern containing `**` is matched against the full path at every
//!   component boundary, like a pattern with a slash. `?` matches one
//!   character except `/`. `[...]` is a class: ranges (`[a-z]`), negation
//!   (`[!...]` or `[^...]`), POSIX classes (`[[:digit:]]`); a `]` right after
//!   `[` or `[!` is a member. A class never matches `/`.
//! * A backslash escapes the next character, *but only* if the pattern
//!   contains a wildcard (`*`, `?` or `[`); otherwise it is literal, so
//!   `back\slash` matches a file named `back\slash`.
//! * `dir/***` matches `dir` itself and everything inside it.
//! * An excluded directory is not descended into: nothing below it is kept,
//!   whatever the other patterns say (there are no include rules).
//!
//! Matching is on raw bytes, like rsync: paths need not be UTF-8, `?` and
//! class members are single *bytes* (so `caf?` matches the Latin-1 name
//! `caf\xE9` but not the UTF-8 `café`, which needs `caf??`), and POSIX
//! classes are ASCII-only (as rsync's are in the C and UTF-8 locales; rsync
//! follows `LC_CTYPE`, so in a Latin-1 locale its `[[:alpha:]]` would also
//! take `é`).
//!
//! # Rule prefixes
//!
//! rsync's filter-rule syntax (`-f '- foo'`, `+`, `merge`, modifiers, ...) is
//! **not** supported: every string is one `--exclude` argument. For those,
//! rsync itself still honours two old-style prefixes, and so do we as far as
//! we can: a leading `"- "` is stripped (`"- *.o"` is the pattern `*.o`),
//! while a leading `"+ "` (which would turn the exclude into an include) and a
//! lone `"!"` (which would clear the earlier rules) are rejected with a
//! [`PatternError`] rather than silently changing meaning. `-foo`, `+foo` and
//! `!foo` are ordinary patterns.
//!
//! # Where we are stricter than rsync
//!
//! rsync silently ignores an empty `--exclude ''` and silently never matches a
//! pattern with an unterminated `[`, an unknown `[:class:]` or a dangling
//! final backslash; a reversed range such as `[z-a]` matches nothing. All of
//! these are almost certainly typos in a backup configuration, so
//! [`ExcludeSet::new`] rejects them.
//!
//! One rsync quirk is kept because it is what rsync does for absolute sources:
//! a pattern *starting* with `**` is matched against the path without its
//! leading `/`, so `**/home/alice/x` does **not** match `/home/alice/x` (the
//! `/` that `**/` needs is not there); write `/home/alice/x` or
//! `home/alice/x` instead. `**/x` still matches any deeper `x`.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use hwc_backup_engine::source::exclude::ExcludeSet;
//!
//! let set = ExcludeSet::new(&["node_modules", "*.tmp", "build/", "/home/alice/skip"])?;
//! assert!(set.is_excluded(Path::new("/home/alice/proj/node_modules"), true));
//! assert!(set.is_excluded(Path::new("/srv/x/a.tmp"), false));
//! assert!(set.is_excluded(Path::new("/home/alice/proj/build"), true));
//! assert!(!set.is_excluded(Path::new("/home/alice/proj/build"), false)); // a file
//! assert!(set.is_excluded(Path::new("/home/alice/skip"), true));
//! assert!(!set.is_excluded(Path::new("/home/bob/home/alice/skip"), true)); // anchored
//! # Ok::<(), hwc_backup_engine::source::exclude::PatternError>(())
//! ```

use std::fmt;
use std::path::Path;

use regex::bytes::{RegexSet, RegexSetBuilder};

/// Why [`ExcludeSet::new`] rejected a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid exclude pattern {pattern:?}: {kind}")]
pub struct PatternError {
    /// The pattern exactly as given.
    pub pattern: String,
    /// What is wrong with it.
    pub kind: PatternErrorKind,
}

/// The reason inside a [`PatternError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternErrorKind {
    /// `""`: rsync ignores it, we refuse it so a typo cannot go unnoticed.
    #[error("the pattern is empty")]
    Empty,
    /// `"- "`: rsync fails with "unexpected end of filter rule".
    #[error("nothing follows the \"- \" prefix")]
    EmptyAfterPrefix,
    /// `"+ foo"`: rsync would read this as an *include* rule.
    #[error("a leading \"+ \" makes rsync treat this as an include rule, which is not supported")]
    IncludeRule,
    /// `"!"`: rsync would clear all earlier rules.
    #[error("a lone \"!\" makes rsync clear the earlier rules, which is not supported")]
    ClearRule,
    /// A `[` with no closing `]` (rsync: the pattern never matches).
    #[error("unterminated character class: the `[` at byte {0} has no closing `]`")]
    UnterminatedClass(usize),
    /// `[[:name:]]` with a name rsync does not know (rsync: never matches).
    #[error("unknown character class `[:{0}:]`")]
    UnknownClass(String),
    /// `[z-a]` (rsync: the range matches nothing).
    #[error("character range `{0}` is reversed, so it matches nothing")]
    ReversedRange(String),
    /// A wildcard pattern ending in a lone `\` (rsync: never matches).
    #[error("the final backslash escapes nothing")]
    TrailingBackslash,
    /// The regex engine refused the translation (size limits).
    #[error("too complex to compile: {0}")]
    TooComplex(String),
}

/// A compiled list of rsync `--exclude` patterns; see the [module docs](self).
///
/// Built once, then queried once per file system entry. The patterns are
/// split by what they are matched against, and each group is one
/// [`RegexSet`], so a query is at most four automaton runs whatever the
/// number of patterns, and allocates nothing.
#[derive(Clone)]
pub struct ExcludeSet {
    /// The patterns as given, for `Debug`.
    patterns: Vec<String>,
    /// Matched against the final name, any kind of entry.
    name_any: Option<RegexSet>,
    /// Matched against the final name, directories only (`foo/`).
    name_dir: Option<RegexSet>,
    /// Matched against the whole absolute path, any kind of entry.
    path_any: Option<RegexSet>,
    /// Matched against the whole absolute path, directories only (`a/b/`, and
    /// the "directory itself" half of `dir/***`).
    path_dir: Option<RegexSet>,
}

impl fmt::Debug for ExcludeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExcludeSet").field("patterns", &self.patterns).finish_non_exhaustive()
    }
}

impl ExcludeSet {
    /// Compiles `patterns` (each one an rsync `--exclude` argument).
    ///
    /// # Errors
    ///
    /// The first pattern that is empty, uses an unsupported rule prefix or is
    /// malformed; see [`PatternErrorKind`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<ExcludeSet, PatternError> {
        let mut groups: [Vec<(String, String)>; 4] = Default::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let fail = |kind| PatternError { pattern: pattern.to_owned(), kind };
            for (group, regex) in compile(pattern).map_err(fail)? {
                groups[group as usize].push((pattern.to_owned(), regex));
            }
        }
        let [name_any, name_dir, path_any, path_dir] = groups.each_ref().map(|g| build_set(g));
        Ok(ExcludeSet {
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            name_any: name_any?,
            name_dir: name_dir?,
            path_any: path_any?,
            path_dir: path_dir?,
        })
    }

    /// True when there are no patterns at all (every entry is kept).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the entry at `abs_path` is excluded.
    ///
    /// `abs_path` must be absolute (a trailing `/` is ignored); `is_dir` must
    /// come from `lstat`, i.e. be false for a symlink to a directory, as with
    /// `rsync -a`. The caller does not descend into an excluded directory;
    /// this function does not look at ancestors. The root `/` is never
    /// excluded (rsync never matches an empty name).
    #[must_use]
    pub fn is_excluded(&self, abs_path: &Path, is_dir: bool) -> bool {
        // `as_encoded_bytes` is the raw path on Unix, so non-UTF-8 names are
        // matched byte for byte, as rsync does.
        let mut path = abs_path.as_os_str().as_encoded_bytes();
        debug_assert!(path.first() == Some(&b'/'), "is_excluded needs an absolute path, got {}", abs_path.display());
        while let [rest @ .., b'/'] = path {
            path = rest;
        }
        let name = match path.iter().rposition(|&b| b == b'/') {
            Some(slash) => &path[slash + 1..],
            None => path,
        };
        if name.is_empty() {
            return false;
        }
        let hit = |set: &Option<RegexSet>, text: &[u8]| set.as_ref().is_some_and(|s| s.is_match(text));
        hit(&self.name_any, name)
            || hit(&self.path_any, path)
            || (is_dir && (hit(&self.name_dir, name) || hit(&self.path_dir, path)))
    }
}

/// Which [`ExcludeSet`] field a translated regex goes into.
#[derive(Clone, Copy)]
enum Group {
    NameAny = 0,
    NameDir = 1,
    PathAny = 2,
    PathDir = 3,
}

fn build_set(regexes: &[(String, String)]) -> Result<Option<RegexSet>, PatternError> {
    if regexes.is_empty() {
        return Ok(None);
    }
    let builder = |res: &[&str]| {
        RegexSetBuilder::new(res)
            // Byte semantics: `.` and `[^/]` match any byte (even invalid
            // UTF-8 and `\n`), exactly like rsync's `unsigned char` matcher.
            .unicode(false)
            .dot_matches_new_line(true)
            .build()
    };
    let all: Vec<&str> = regexes.iter().map(|(_, re)| re.as_str()).collect();
    builder(&all).map(Some).map_err(|err| {
        // Name the culprit: retry one by one (only on this cold error path).
        let culprit = regexes.iter().find(|(_, re)| builder(&[re.as_str()]).is_err()).map_or_else(
            || {
                let patterns: Vec<&str> = regexes.iter().map(|(p, _)| p.as_str()).collect();
                patterns.join(" | ")
            },
            |(pattern, _)| pattern.clone(),
        );
        PatternError { pattern: culprit, kind: PatternErrorKind::TooComplex(err.to_string()) }
    })
}

/// One element of a wildcard pattern.
#[derive(Clone, PartialEq, Eq)]
enum Token {
    Lit(u8),
    /// `*`: any run without `/`.
    Star,
    /// `**` (or longer): any run at all.
    StarStar,
    /// `?`: one byte except `/`.
    Any,
    /// `[...]`: the set of bytes it matches, `/` already removed.
    Class(Box<[bool; 256]>),
}

/// Translates one rsync pattern into `(group, regex)` pairs; no pairs if the
/// pattern is valid but can never match (rsync accepts those too).
///
/// We translate to `regex` ourselves rather than use `globset`: rsync's `**`
/// is special anywhere (`a**z` crosses `/`), while globset only gives `**`
/// its meaning as a whole path component; rsync also has its own rules for
/// when `\` escapes, for `[!...]`/`[^...]`, and for *where* in the path a
/// pattern may match (final name, trailing N components, every component
/// boundary, or anchored), all of which are transcribed below from rsync's
/// `exclude.c` (`add_rule`, `rule_matches`) and `lib/wildmatch.c`.
fn compile(original: &str) -> Result<Vec<(Group, String)>, PatternErrorKind> {
    if original.is_empty() {
        return Err(PatternErrorKind::Empty);
    }
    // `--exclude` parses with XFLG_OLD_PREFIXES: "- " and "+ " are rule
    // prefixes and a lone "!" clears the list (exclude.c, parse_rule_tok).
    let text = if let Some(rest) = original.strip_prefix("- ") {
        if rest.is_empty() {
            return Err(PatternErrorKind::EmptyAfterPrefix);
        }
        rest
    } else if original.starts_with("+ ") {
        return Err(PatternErrorKind::IncludeRule);
    } else if original == "!" {
        return Err(PatternErrorKind::ClearRule);
    } else {
        original
    };

    // add_rule: one trailing slash (if it is not the whole pattern) means
    // "directories only" and is not part of the pattern.
    let mut pat = text.as_bytes();
    let dir_only = pat.len() > 1 && pat.ends_with(b"/");
    if dir_only {
        pat = &pat[..pat.len() - 1];
    }
    // The flags rsync derives from the *raw* text, escapes and classes
    // notwithstanding (so `a\**` counts as containing `**`, `[/]` as a slash).
    let slash_cnt = pat.iter().filter(|&&b| b == b'/').count();
    let wild = pat.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let wild2 = wild && pat.windows(2).any(|w| w == b"**");
    let wild2_prefix = wild2 && pat.starts_with(b"**");
    let wild3_suffix = wild2 && pat.ends_with(b"***");
    let anchored = pat.starts_with(b"/");

    let tokens = if wild {
        match tokenize(pat)? {
            Some(tokens) => tokens,
            None => return Ok(Vec::new()), // an empty class: never matches
        }
    } else {
        // Without a wildcard rsync compares literally: `\` is just a byte.
        pat.iter().map(|&b| Token::Lit(b)).collect()
    };

    // Where the regexes go: name or path group, and whether non-directories
    // may match at all.
    let name_only = slash_cnt == 0 && !wild2;
    let (any, dir) = match (name_only, dir_only) {
        (true, false) => (Group::NameAny, Group::NameDir),
        (true, true) => (Group::NameDir, Group::NameDir),
        (false, false) => (Group::PathAny, Group::PathDir),
        (false, true) => (Group::PathDir, Group::PathDir),
    };
    if name_only {
        // Matched against the final component only.
        return Ok(vec![(any, format!("^{}$", to_regex(&tokens)))]);
    }

    // The rest is matched against the absolute path. rsync matches the name
    // relative to the transfer root, i.e. our path without its leading `/`,
    // in one of three ways (rule_matches' `slash_handling`), which become:
    let (prefix, tokens) = if anchored || wild2_prefix {
        // Anchored (`/a/b`, our tokens keep its `/`), or starting with `**`:
        // the whole name must match. For `**...` that name has no leading
        // `/` (rsync only prepends one when the file-list name lacks it, and
        // with `--relative /abs` it has it): so `**/top` cannot match `/top`.
        (if anchored { "^" } else { "^/" }, tokens)
    } else if !wild2 {
        // A slash but no `**`: the last slash_cnt+1 components must match.
        // Nothing but a literal `/` token can match `/`, so that is a tail
        // match at a component boundary, provided the tokens hold exactly
        // slash_cnt slashes; otherwise (a `/` inside a class) rsync compares
        // a slash_cnt-slash tail with a pattern needing a different number,
        // which never matches.
        let literal_slashes = tokens.iter().filter(|t| **t == Token::Lit(b'/')).count();
        if literal_slashes != slash_cnt {
            return Ok(Vec::new());
        }
        ("/", tokens)
    } else {
        // `**` not at the start: tried at the start of the name and after
        // every `/`, i.e. after any `/` of the absolute path.
        ("/", tokens)
    };
    let mut out = vec![(any, format!("{prefix}{}$", to_regex(&tokens)))];

    // rule_matches appends a "/" to a directory's name when the pattern ends
    // in `***`, so that `dir/***` also matches `dir` itself. Our regex for
    // `Y***` run on "path/" matches iff it matches "path" or Y matches all of
    // "path/"; Y cannot end in a star (it would have merged with `***`), so
    // the latter needs Y = Z + literal `/` with Z matching all of "path".
    if wild3_suffix {
        if let [z @ .., Token::Lit(b'/'), Token::StarStar] = tokens.as_slice() {
            out.push((dir, format!("{prefix}{}$", to_regex(z))));
        }
    }
    Ok(out)
}

/// Splits a wildcard pattern into tokens, following wildmatch.c's `dowild`.
/// `Ok(None)` means a class matches no byte at all, so the pattern never
/// matches.
fn tokenize(pat: &[u8]) -> Result<Option<Vec<Token>>, PatternErrorKind> {
    let mut tokens = Vec::with_capacity(pat.len());
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'\\' => {
                // dowild compares the next byte literally; if there is none
                // it compares against NUL, which never matches.
                let &next = pat.get(i + 1).ok_or(PatternErrorKind::TrailingBackslash)?;
                tokens.push(Token::Lit(next));
                i += 2;
            }
            b'*' => {
                let run = pat[i..].iter().take_while(|&&b| b == b'*').count();
                tokens.push(if run == 1 { Token::Star } else { Token::StarStar });
                i += run;
            }
            b'?' => {
                tokens.push(Token::Any);
                i += 1;
            }
            b'[' => {
                let (set, end) = parse_class(pat, i)?;
                if !set.iter().any(|&b| b) {
                    return Ok(None);
                }
                tokens.push(Token::Class(set));
                i = end;
            }
            b => {
                tokens.push(Token::Lit(b));
                i += 1;
            }
        }
    }
    Ok(Some(tokens))
}

/// Parses the class starting at `pat[open] == b'['`, a transcription of the
/// `case '['` loop of wildmatch.c. Returns the matching bytes (never `/`) and
/// the index just past the closing `]`.
fn parse_class(pat: &[u8], open: usize) -> Result<(Box<[bool; 256]>, usize), PatternErrorKind> {
    let unterminated = PatternErrorKind::UnterminatedClass(open);
    let at = |k: usize| pat.get(k).copied();
    let mut set = Box::new([false; 256]);
    let mut p = open + 1;
    let negated = matches!(at(p), Some(b'!' | b'^'));
    if negated {
        p += 1;
    }
    // `prev` is the last single member, the start of a possible range; like
    // rsync's `prev_ch`, it is reset after a range or a `[:class:]`.
    let mut prev: Option<u8> = None;
    // A do-while: the first member is read before `]` is looked for, which
    // is why `[]a]` and `[!]a]` contain `]`.
    loop {
        let c = at(p).ok_or_else(|| unterminated.clone())?;
        let mut this: Option<u8>;
        if c == b'\\' {
            p += 1;
            let e = at(p).ok_or_else(|| unterminated.clone())?;
            set[e as usize] = true;
            this = Some(e);
        } else if c == b'-' && prev.is_some() && at(p + 1).is_some_and(|n| n != b']') {
            p += 1;
            let mut hi = pat[p];
            if hi == b'\\' {
                p += 1;
                hi = at(p).ok_or_else(|| unterminated.clone())?;
            }
            let lo = prev.unwrap_or_default();
            if hi < lo {
                let show = |b: u8| std::ascii::escape_default(b).to_string();
                return Err(PatternErrorKind::ReversedRange(format!("{}-{}", show(lo), show(hi))));
            }
            for b in lo..=hi {
                set[b as usize] = true;
            }
            this = None;
        } else if c == b'[' && at(p + 1) == Some(b':') {
            // `[:name:]`: the name runs to the next `]`, which must follow
            // a `:`; if it does not, the `[` was an ordinary member.
            let name_start = p + 2;
            let close = pat[name_start..]
                .iter()
                .position(|&b| b == b']')
                .map(|k| name_start + k)
                .ok_or_else(|| unterminated.clone())?;
            if close > name_start && pat[close - 1] == b':' {
                let name = &pat[name_start..close - 1];
                let class = posix_class(name)
                    .ok_or_else(|| PatternErrorKind::UnknownClass(String::from_utf8_lossy(name).into_owned()))?;
                for b in 0..=255u8 {
                    if class(b) {
                        set[b as usize] = true;
                    }
                }
                p = close;
                this = None;
            } else {
                set[b'[' as usize] = true;
                this = Some(b'[');
            }
        } else {
            set[c as usize] = true;
            this = Some(c);
        }
        prev = this.take();
        p += 1;
        match at(p) {
            Some(b']') => break,
            Some(_) => {}
            None => return Err(unterminated),
        }
    }
    if negated {
        for b in set.iter_mut() {
            *b = !*b;
        }
    }
    // "if (matched == special || t_ch == '/') return FALSE": never a slash.
    set[b'/' as usize] = false;
    Ok((set, p + 1))
}

/// The POSIX classes wildmatch.c knows; ASCII-only like its `ISASCII(c) &&`
/// tests (in the C and UTF-8 locales, `isalpha` & co. are false above 0x7f).
fn posix_class(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |b: u8| b.is_ascii_alphanumeric(),
        b"alpha" => |b: u8| b.is_ascii_alphabetic(),
        b"blank" => |b: u8| b == b' ' || b == b'\t',
        b"cntrl" => |b: u8| b.is_ascii_control(),
        b"digit" => |b: u8| b.is_ascii_digit(),
        b"graph" => |b: u8| b.is_ascii_graphic(),
        b"lower" => |b: u8| b.is_ascii_lowercase(),
        b"print" => |b: u8| b.is_ascii_graphic() || b == b' ',
        b"punct" => |b: u8| b.is_ascii_punctuation(),
        // C's isspace also counts \v (0x0b), which is_ascii_whitespace omits.
        b"space" => |b: u8| b.is_ascii_whitespace() || b == 0x0b,
        b"upper" => |b: u8| b.is_ascii_uppercase(),
        b"xdigit" => |b: u8| b.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// Writes tokens as a byte-oriented regex (built with Unicode off and `.`
/// matching `\n`); every non-alphanumeric byte is written as `\xHH`, which
/// cannot be mistaken for regex syntax.
fn to_regex(tokens: &[Token]) -> String {
    use std::fmt::Write as _;
    let mut re = String::with_capacity(tokens.len() * 4);
    for token in tokens {
        match token {
            Token::Lit(b) if b.is_ascii_alphanumeric() => re.push(*b as char),
            Token::Lit(b) => {
                let _ = write!(re, "\\x{b:02X}");
            }
            Token::Star => re.push_str("[^/]*"),
            Token::StarStar => re.push_str(".*"),
            Token::Any => re.push_str("[^/]"),
            Token::Class(set) => {
                re.push('[');
                let mut b = 0usize;
                while b < 256 {
                    if !set[b] {
                        b += 1;
                        continue;
                    }
                    let start = b;
                    while b + 1 < 256 && set[b + 1] {
                        b += 1;
                    }
                    let _ = write!(re, "\\x{start:02X}-\\x{b:02X}");
                    b += 1;
                }
                re.push(']');
            }
        }
    }
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_excluded` for one pattern list, entry given as a str path.
    fn ex(patterns: &[&str], path: &str, is_dir: bool) -> bool {
        ExcludeSet::new(patterns).unwrap().is_excluded(Path::new(path), is_dir)
    }

    fn err(pattern: &str) -> PatternErrorKind {
        let e = ExcludeSet::new(&[pattern]).unwrap_err();
        assert_eq!(e.pattern, pattern);
        e.kind
    }

    #[test]
    fn empty_set_excludes_nothing() {
        let set = ExcludeSet::new::<&str>(&[]).unwrap();
        assert!(set.is_empty());
        assert!(!set.is_excluded(Path::new("/a"), true));
        assert!(!ExcludeSet::new(&["x"]).unwrap().is_empty());
    }

    #[test]
    fn name_pattern_matches_final_component_at_any_depth() {
        assert!(ex(&["node_modules"], "/node_modules", true));
        assert!(ex(&["node_modules"], "/a/b/c/node_modules", true));
        assert!(ex(&["node_modules"], "/a/node_modules", false));
        assert!(!ex(&["node_modules"], "/a/node_modules_x", true));
        assert!(!ex(&["node_modules"], "/a/xnode_modules", true));
        // Only the final component: ancestors are the walker's business.
        assert!(!ex(&["node_modules"], "/a/node_modules/pkg", false));
        assert!(ex(&[".cache"], "/home/alice/.cache", true));
    }

    #[test]
    fn star_stays_within_a_name() {
        assert!(ex(&["*.tmp"], "/x/a.tmp", false));
        assert!(ex(&["*.tmp"], "/x/.tmp", false));
        assert!(!ex(&["*.tmp"], "/x/a.tmp/b", false));
        assert!(!ex(&["*.tmp"], "/x/a.tmpx", false));
        assert!(ex(&["a/*/c"], "/r/a/b/c", false));
        assert!(!ex(&["a/*/c"], "/r/a/b/b/c", false));
    }

    #[test]
    fn inner_slash_matches_the_tail_at_a_component_boundary() {
        let p = [".local/share/Trash"];
        assert!(ex(&p, "/home/alice/.local/share/Trash", true));
        assert!(ex(&p, "/.local/share/Trash", true));
        assert!(!ex(&p, "/home/alice/x.local/share/Trash", true));
        assert!(!ex(&p, "/home/alice/.local/share/Trash/files", true));
        assert!(!ex(&p, "/home/alice/.local/share/Trashy", true));
        assert!(ex(&["b/c"], "/a/b/c", false));
        assert!(!ex(&["b/c"], "/a/bb/c", false));
    }

    #[test]
    fn leading_slash_anchors_at_the_root() {
        let p = ["/home/alice/skip"];
        assert!(ex(&p, "/home/alice/skip", true));
        assert!(ex(&p, "/home/alice/skip", false));
        assert!(!ex(&p, "/srv/home/alice/skip", true));
        assert!(!ex(&p, "/home/alice/skip/x", false));
        assert!(ex(&["/home/*/skip"], "/home/bob/skip", true));
        assert!(!ex(&["/home/*/skip"], "/x/home/bob/skip", true));
        assert!(ex(&["/home/**/skip"], "/home/a/b/skip", true));
        // The root itself is never excluded, as in rsync.
        assert!(!ex(&["/", "/**", "**"], "/", true));
        assert!(ex(&["/**"], "/a", true));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        assert!(ex(&["build/"], "/p/build", true));
        assert!(!ex(&["build/"], "/p/build", false));
        assert!(ex(&["a/build/"], "/p/a/build", true));
        assert!(!ex(&["a/build/"], "/p/a/build", false));
        assert!(ex(&["/p/*/"], "/p/a", true));
        assert!(!ex(&["/p/*/"], "/p/a", false));
        // A trailing slash on the path is ignored.
        assert!(ex(&["build/"], "/p/build/", true));
    }

    #[test]
    fn double_star_crosses_slashes_even_inside_a_name() {
        assert!(ex(&["**/logs/*.log"], "/var/app/logs/a.log", false));
        assert!(!ex(&["**/logs/*.log"], "/var/app/logs/deep/a.log", false));
        assert!(ex(&["a**z"], "/x/abz", false));
        assert!(ex(&["a**z"], "/x/ab/cz", false));
        assert!(ex(&["a**z"], "/abc/yz", false));
        assert!(!ex(&["a**z"], "/x/ba/cz", false)); // must start a component
        assert!(!ex(&["a**z"], "/x/ab/cz/d", false)); // must end the path
        assert!(ex(&["proj/**/c.log"], "/h/proj/logs/deep/c.log", false));
        assert!(!ex(&["proj/**/c.log"], "/h/proj/c.log", false));
        assert!(ex(&["**.o"], "/x/y.o", false));
    }

    #[test]
    fn leading_double_star_does_not_match_the_first_component() {
        // rsync with `--relative /abs` matches `**...` against the path
        // without its leading slash.
        assert!(!ex(&["**/home/alice/x"], "/home/alice/x", false));
        assert!(ex(&["**/alice/x"], "/home/alice/x", false));
        assert!(ex(&["**home/alice/x"], "/home/alice/x", false));
        assert!(ex(&["**/x"], "/home/alice/x", false));
    }

    #[test]
    fn triple_star_matches_the_directory_and_its_contents() {
        let p = ["proj/***"];
        assert!(ex(&p, "/h/proj", true));
        assert!(!ex(&p, "/h/proj", false)); // a file named proj
        assert!(ex(&p, "/h/proj/a", false));
        assert!(ex(&p, "/h/proj/a/b", true));
        assert!(!ex(&p, "/h/xproj", true));
        assert!(ex(&["/h/***"], "/h", true));
        assert!(ex(&["/h/***"], "/h/a", false));
        assert!(ex(&["**/proj/***"], "/h/proj", true));
        assert!(!ex(&["**/proj/***"], "/proj", true));
    }

    #[test]
    fn question_mark_is_one_non_slash_byte() {
        assert!(ex(&["?.txt"], "/d/a.txt", false));
        assert!(!ex(&["?.txt"], "/d/ab.txt", false));
        assert!(!ex(&["a?b"], "/d/a/b", false));
        // Bytes, not characters: `é` is two bytes in UTF-8.
        assert!(!ex(&["caf?"], "/d/café", false));
        assert!(ex(&["caf??"], "/d/café", false));
        #[cfg(unix)]
        {
            use std::ffi::OsStr;
            use std::os::unix::ffi::OsStrExt;
            let latin1 = Path::new(OsStr::from_bytes(b"/d/caf\xe9"));
            assert!(ExcludeSet::new(&["caf?"]).unwrap().is_excluded(latin1, false));
            assert!(ExcludeSet::new(&["/d/*"]).unwrap().is_excluded(latin1, false));
        }
    }

    #[test]
    fn character_classes() {
        assert!(ex(&["[ab].txt"], "/d/a.txt", false));
        assert!(!ex(&["[ab].txt"], "/d/c.txt", false));
        assert!(ex(&["file[0-9]"], "/d/file7", false));
        assert!(!ex(&["file[0-9]"], "/d/filex", false));
        assert!(ex(&["[!a]x"], "/d/bx", false));
        assert!(!ex(&["[!a]x"], "/d/ax", false));
        assert!(ex(&["[^a]x"], "/d/bx", false));
        assert!(ex(&["[]]"], "/d/]", false));
        assert!(ex(&["[!]]"], "/d/x", false));
        assert!(!ex(&["[!]]"], "/d/]", false));
        assert!(ex(&["[a-]"], "/d/-", false));
        assert!(ex(&["[-a]"], "/d/-", false));
        assert!(ex(&["[[:digit:]]*"], "/d/1abc", false));
        assert!(!ex(&["[[:digit:]]*"], "/d/abc", false));
        assert!(ex(&["[[:upper:][:digit:]]"], "/d/Q", false));
        assert!(ex(&["[\\]]"], "/d/]", false));
        // `[[:` without `:]` is a plain member list.
        assert!(ex(&["[[:x]"], "/d/:", false));
        // A class never matches `/`, even negated.
        assert!(!ex(&["a[!x]b"], "/d/a/b", false));
        assert!(!ex(&["/d[!x]a"], "/d/a", false));
    }

    #[test]
    fn backslash_escapes_only_in_wildcard_patterns() {
        assert!(ex(&["back\\slash"], "/d/back\\slash", false));
        assert!(!ex(&["back\\slash"], "/d/backslash", false));
        assert!(ex(&["back\\slash*"], "/d/backslash1", false));
        assert!(!ex(&["back\\slash*"], "/d/back\\slash1", false));
        assert!(ex(&["br\\[ack\\]et"], "/d/br[ack]et", false));
        assert!(ex(&["star\\*"], "/d/star*", false));
        assert!(!ex(&["star\\*"], "/d/starx", false));
        assert!(ex(&["q\\?*"], "/d/q?mark", false));
    }

    #[test]
    fn literal_special_characters() {
        assert!(ex(&["with space"], "/d/with space", true));
        assert!(ex(&["a.b"], "/d/a.b", false));
        assert!(!ex(&["a.b"], "/d/axb", false));
        assert!(ex(&["(x)+$^|{}"], "/d/(x)+$^|{}", false));
        assert!(ex(&["]"], "/d/]", false));
        assert!(ex(&["trailing "], "/d/trailing ", false));
        assert!(!ex(&["trailing "], "/d/trailing", false));
    }

    #[test]
    fn rule_prefixes_of_exclude() {
        assert!(ex(&["- notes.txt"], "/d/notes.txt", false));
        assert!(!ex(&["- notes.txt"], "/d/- notes.txt", false));
        assert!(ex(&["- - x"], "/d/- x", false));
        assert!(ex(&["- !"], "/d/!", false));
        assert!(ex(&["!x"], "/d/!x", false));
        assert!(ex(&["-x"], "/d/-x", false));
        assert!(ex(&["+x"], "/d/+x", false));
        assert_eq!(err("+ x"), PatternErrorKind::IncludeRule);
        assert_eq!(err("!"), PatternErrorKind::ClearRule);
        assert_eq!(err("- "), PatternErrorKind::EmptyAfterPrefix);
    }

    #[test]
    fn malformed_patterns_are_errors() {
        assert_eq!(err(""), PatternErrorKind::Empty);
        assert_eq!(err("a["), PatternErrorKind::UnterminatedClass(1));
        assert_eq!(err("[]"), PatternErrorKind::UnterminatedClass(0));
        assert_eq!(err("[!]"), PatternErrorKind::UnterminatedClass(0));
        assert_eq!(err("[a\\"), PatternErrorKind::UnterminatedClass(0));
        assert_eq!(err("[[:alpha:]"), PatternErrorKind::UnterminatedClass(0));
        assert_eq!(err("[[:nope:]]"), PatternErrorKind::UnknownClass("nope".into()));
        assert_eq!(err("[z-a]"), PatternErrorKind::ReversedRange("z-a".into()));
        assert_eq!(err("x*\\"), PatternErrorKind::TrailingBackslash);
        let e = ExcludeSet::new(&["ok", "a["]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid exclude pattern \"a[\": unterminated character class: the `[` at byte 1 has no closing `]`"
        );
        // Without wildcards a trailing backslash is just a byte.
        assert!(ex(&["x\\"], "/d/x\\", false));
    }

    #[test]
    fn patterns_that_can_never_match_are_accepted() {
        // rsync counts the `/` in `[/]` as a slash and a class never matches
        // `/`: such patterns are legal and match nothing.
        assert!(!ex(&["[/a]x"], "/d/ax", false));
        assert!(!ex(&["a[/]b"], "/d/a/b", false));
        assert!(!ex(&["a//b"], "/d/a/b", false));
    }

    #[test]
    fn several_patterns_combine() {
        let set = ExcludeSet::new(&[".cache", "*.tmp", ".local/share/Trash", "build/"]).unwrap();
        assert!(set.is_excluded(Path::new("/h/.cache"), true));
        assert!(set.is_excluded(Path::new("/h/x.tmp"), false));
        assert!(set.is_excluded(Path::new("/h/.local/share/Trash"), true));
        assert!(set.is_excluded(Path::new("/h/build"), true));
        assert!(!set.is_excluded(Path::new("/h/build"), false));
        assert!(!set.is_excluded(Path::new("/h/keep"), false));
        assert!(format!("{set:?}").contains("*.tmp"));
    }
}
