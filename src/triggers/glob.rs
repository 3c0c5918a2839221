//! Glob patterns for branch names (`release/*`) and repository paths
//! (`.devcontainer/**`), parsed once at configuration load.
//!
//! The rules, anchored at the start of the name (a path pattern is relative
//! to the repository root): `/` separates segments; `*` matches any run of
//! characters within one segment, `?` one character of a segment, and a
//! whole segment `**` any number of segments, none included. Everything
//! else matches itself. Small on purpose: branch and path filters need no
//! more, and a pattern that means the same on every server is worth more
//! than gitignore's many special cases.

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of whole segments.
    Any,
    /// Characters, `*` and `?` within one segment.
    Chars(Vec<Token>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    Star,
    Question,
}

impl Glob {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Glob, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.starts_with('/') || trimmed.ends_with('/') || trimmed.contains("//") {
            return Err(format!("{text:?} must not start or end with \"/\" or hold an empty segment"));
        }
        let mut segments = Vec::new();
        for segment in trimmed.split('/') {
            if segment == "**" {
                segments.push(Segment::Any);
            } else if segment.contains("**") {
                return Err(format!("{text:?}: \"**\" must be a whole segment (like \"docs/**\")"));
            } else {
                let tokens = segment
                    .chars()
                    .map(|c| match c {
                        '*' => Token::Star,
                        '?' => Token::Question,
                        other => Token::Literal(other),
                    })
                    .collect();
                segments.push(Segment::Chars(tokens));
            }
        }
        Ok(Glob { text: trimmed.to_string(), segments })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard (a plain branch name).
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Chars(tokens) if tokens.iter().all(|t| matches!(t, Token::Literal(_)))))
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..])),
        Some((Segment::Chars(tokens), rest)) => match parts.split_first() {
            Some((part, remaining)) => match_chars(tokens, &part.chars().collect::<Vec<_>>()) && match_segments(rest, remaining),
            None => false,
        },
    }
}

fn match_chars(tokens: &[Token], chars: &[char]) -> bool {
    match tokens.split_first() {
        None => chars.is_empty(),
        Some((Token::Star, rest)) => (0..=chars.len()).any(|skip| match_chars(rest, &chars[skip..])),
        Some((Token::Question, rest)) => !chars.is_empty() && match_chars(rest, &chars[1..]),
        Some((Token::Literal(c), rest)) => chars.first() == Some(c) && match_chars(rest, &chars[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn matches(pattern: &str, name: &str) -> bool {
        Glob::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn branches() {
        assert!(matches("main", "main"));
        assert!(!matches("main", "main2") && !matches("main", "feature/main"));
        assert!(matches("release/*", "release/1.2"));
        assert!(!matches("release/*", "release/1/2"), "* stays within a segment");
        assert!(!matches("release/*", "release"));
        assert!(matches("release/**", "release/1/2") && matches("release/**", "release"));
        assert!(matches("v?", "v1") && !matches("v?", "v12"));
        assert!(matches("*", "anything") && !matches("*", "a/b"));
        assert!(Glob::parse("main").unwrap().is_literal() && !Glob::parse("r/*").unwrap().is_literal());
    }

    #[test]
    fn paths() {
        assert!(matches(".devcontainer/**", ".devcontainer/devcontainer.json"));
        assert!(matches(".devcontainer/**", ".devcontainer/a/b/Dockerfile"));
        assert!(!matches(".devcontainer/**", "src/.devcontainer.json"));
        assert!(matches("package-lock.json", "package-lock.json"));
        assert!(!matches("package-lock.json", "web/package-lock.json"), "anchored at the root");
        assert!(matches("**/package-lock.json", "web/package-lock.json") && matches("**/package-lock.json", "package-lock.json"));
        assert!(matches("src/*.rs", "src/main.rs") && !matches("src/*.rs", "src/a/main.rs"));
        assert!(matches("docs/**/*.md", "docs/a/b/c.md") && matches("docs/**/*.md", "docs/c.md"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Glob::parse("").unwrap_err().contains("empty"));
        assert!(Glob::parse("/main").is_err() && Glob::parse("a//b").is_err() && Glob::parse("a/").is_err());
        assert!(Glob::parse("a**/b").unwrap_err().contains("whole segment"));
    }
}
