//! The parts of `devcontainer.json` a prebuild runs: `onCreateCommand` and
//! `updateContentCommand`, in that order (the devcontainer spec's prebuild
//! lifecycle; `postCreateCommand` and later ones belong to a user's session).
//!
//! The file is JSON with comments (`//`, `/* */`) and trailing commas (the
//! spec's "JSONC"), so [`jsonc_to_json`] turns it into plain JSON for
//! serde_json first. This module only parses; running the commands is the
//! runner's business.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The lifecycle keys a prebuild runs, in order.
const PREBUILD_KEYS: [&str; 2] = ["onCreateCommand", "updateContentCommand"];

/// Keys that describe a container. A runner that runs the commands on its
/// host does not honour them; it says so in the log rather than pretend.
const CONTAINER_KEYS: [&str; 5] = ["image", "build", "dockerFile", "dockerComposeFile", "features"];

/// One lifecycle command in one of the spec's three forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleCommand {
    /// A string: run by a shell (`/bin/sh -c`).
    Shell(String),
    /// An array: the program and its arguments, run directly without a shell.
    Exec(Vec<String>),
    /// An object: named commands (strings or arrays) that run in parallel
    /// and must all succeed.
    Parallel(Vec<(String, LifecycleCommand)>),
}

impl LifecycleCommand {
    /// The command as written in the file, for logs and failure messages:
    /// a string as it is, an array or object as JSON.
    pub fn describe(&self) -> String {
        match self {
            LifecycleCommand::Shell(line) => line.clone(),
            other => other.to_json().to_string(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            LifecycleCommand::Shell(line) => Value::String(line.clone()),
            LifecycleCommand::Exec(argv) => Value::Array(argv.iter().cloned().map(Value::String).collect()),
            LifecycleCommand::Parallel(parts) => Value::Object(parts.iter().map(|(name, part)| (name.clone(), part.to_json())).collect()),
        }
    }
}

/// What a prebuild takes from a devcontainer.json.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrebuildLifecycle {
    /// The commands to run, in order, each with the key it came from.
    pub commands: Vec<(&'static str, LifecycleCommand)>,
    /// Container keys present in the file (see [`CONTAINER_KEYS`]).
    pub container_keys: Vec<&'static str>,
}

/// Where a workspace's devcontainer.json is: `.devcontainer/devcontainer.json`,
/// else `.devcontainer.json` at the root (the spec's two default places).
pub fn locate(workspace: &Path) -> Option<PathBuf> {
    [workspace.join(".devcontainer").join("devcontainer.json"), workspace.join(".devcontainer.json")].into_iter().find(|p| p.is_file())
}

/// Parses devcontainer.json text (JSONC) into its prebuild lifecycle. The
/// error says what is wrong in terms of the file.
pub fn parse(text: &str) -> Result<PrebuildLifecycle, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value =
        serde_json::from_str(&jsonc_to_json(text)).map_err(|e| format!("devcontainer.json is not valid JSON with comments: {e}"))?;
    let object = value.as_object().ok_or("devcontainer.json must hold a JSON object")?;
    let mut commands = Vec::new();
    for key in PREBUILD_KEYS {
        if let Some(command) = object.get(key).map(|value| command_of(key, value)).transpose()?.flatten() {
            commands.push((key, command));
        }
    }
    let container_keys = CONTAINER_KEYS.into_iter().filter(|key| object.contains_key(*key)).collect();
    Ok(PrebuildLifecycle { commands, container_keys })
}

/// One lifecycle value; `None` when it asks for nothing (null, an empty
/// string, array or object), as the spec treats those.
fn command_of(key: &str, value: &Value) -> Result<Option<LifecycleCommand>, String> {
    match value {
        Value::Object(entries) => {
            let mut parts = Vec::new();
            for (name, entry) in entries {
                if let Some(part) = single_command_of(&format!("{key}.{name}"), entry)? {
                    parts.push((name.clone(), part));
                }
            }
            Ok((!parts.is_empty()).then_some(LifecycleCommand::Parallel(parts)))
        }
        other => single_command_of(key, other),
    }
}

/// A string or an array (the forms an object's values may take).
fn single_command_of(key: &str, value: &Value) -> Result<Option<LifecycleCommand>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(line) if line.trim().is_empty() => Ok(None),
        Value::String(line) => Ok(Some(LifecycleCommand::Shell(line.clone()))),
        Value::Array(items) if items.is_empty() => Ok(None),
        Value::Array(items) => {
            let argv = items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_string).ok_or_else(|| format!("{key}: the items of an array command must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(LifecycleCommand::Exec(argv)))
        }
        Value::Object(_) => Err(format!("{key}: the commands of an object must be strings or arrays (objects do not nest)")),
        _ => Err(format!("{key} must be a string, an array of strings or an object")),
    }
}

/// Turns JSONC into JSON: removes `//` and `/* */` comments and trailing
/// commas before `}` and `]`. Strings (which may hold `//`, `/*`, commas and
/// escaped quotes) pass unchanged, and newlines inside comments are kept so
/// that serde_json's line numbers still point into the original file.
pub fn jsonc_to_json(text: &str) -> String {
    strip_trailing_commas(&strip_comments(text))
}

/// Copies a string literal starting at `chars[start]` (the opening quote)
/// into `out`; returns the index after it (or the end, if it never closes).
fn copy_string(chars: &[char], start: usize, out: &mut String) -> usize {
    out.push(chars[start]);
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        match c {
            // An escape takes the next character with it, so `\"` never ends the string.
            '\\' if i < chars.len() => {
                out.push(chars[i]);
                i += 1;
            }
            '"' => return i,
            _ => {}
        }
    }
    i
}

fn strip_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('"', _) => i = copy_string(&chars, i, &mut out),
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                // Past the closing `*/` (an unclosed comment runs to the end).
                i = (i + 2).min(chars.len());
                // A comment separates tokens, as whitespace does.
                out.push(' ');
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn strip_trailing_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' => i = copy_string(&chars, i, &mut out),
            ',' if matches!(chars[i + 1..].iter().find(|c| !c.is_whitespace()), Some('}' | ']')) => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(text: &str) -> Value {
        serde_json::from_str(&jsonc_to_json(text)).unwrap_or_else(|e| panic!("{e}: {}", jsonc_to_json(text)))
    }

    #[test]
    fn comments_go() {
        let value = json_of(
            "{\n  // a line comment\n  \"a\": 1, /* a block\n comment */ \"b\": 2 // at the end of a line\n}\n// at the end of the file",
        );
        assert_eq!(value, json!({"a": 1, "b": 2}));
    }

    #[test]
    fn strings_that_look_like_comments_stay() {
        let value = json_of(
            r#"{
                "url": "https://example.com//path", // a comment after
                "glob": "src/**/*.rs",
                "block": "/* not a comment */",
                "slashes": "//"
            }"#,
        );
        assert_eq!(
            value,
            json!({"url": "https://example.com//path", "glob": "src/**/*.rs", "block": "/* not a comment */", "slashes": "//"})
        );
    }

    #[test]
    fn escaped_quotes_and_backslashes_do_not_end_or_extend_strings() {
        let value = json_of(
            r#"{
                "quote": "say \"hi\" // still the string",
                "backslash": "C:\\", // a comment right after a string ending in a backslash
                "both": "\\\" /* still */ ,}",
                "unicode": "\u00e9 é ✓"
            }"#,
        );
        assert_eq!(value["quote"], "say \"hi\" // still the string");
        assert_eq!(value["backslash"], "C:\\");
        assert_eq!(value["both"], "\\\" /* still */ ,}");
        assert_eq!(value["unicode"], "é é ✓");
    }

    #[test]
    fn quotes_inside_comments_do_not_open_strings() {
        let value = json_of("{\n  // it's a \"quoted\" word\n  \"a\": /* \" */ 1\n}");
        assert_eq!(value, json!({"a": 1}));
    }

    #[test]
    fn trailing_commas_go_also_before_comments_and_nested() {
        let value = json_of(
            r#"{
                "list": [1, 2, ],
                "nested": { "x": [ [1,], {"y": 2,}, ], },
                "commented": [1, // the last one
                ],
                "comma in string": "a,}",
            }"#,
        );
        assert_eq!(value, json!({"list": [1, 2], "nested": {"x": [[1], {"y": 2}]}, "commented": [1], "comma in string": "a,}"}));
    }

    #[test]
    fn plain_json_passes_unchanged() {
        let text = r#"{"a": [1, 2, {"b": "c, d"}], "e": "f/g"}"#;
        assert_eq!(jsonc_to_json(text), text);
    }

    #[test]
    fn line_numbers_survive_block_comments() {
        let text = "{\n/* one\ntwo\nthree */\n\"a\": oops\n}";
        let error = serde_json::from_str::<Value>(&jsonc_to_json(text)).unwrap_err();
        assert_eq!(error.line(), 5, "{error}");
    }

    #[test]
    fn unclosed_comments_and_strings_do_not_panic() {
        for text in ["{ /* never closed", "{ \"never closed", "{ \"a\\", "/", "\"", ",", "{\"a\": 1,"] {
            let _ = jsonc_to_json(text);
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_three_command_forms() {
        let lifecycle = parse(
            r#"{
              "image": "mcr.microsoft.com/devcontainers/base",
              "onCreateCommand": "make setup", // a shell line
              "updateContentCommand": { "deps": ["npm", "ci"], "build": "make build", },
              "postCreateCommand": "not part of a prebuild",
            }"#,
        )
        .unwrap();
        assert_eq!(lifecycle.commands[0], ("onCreateCommand", LifecycleCommand::Shell("make setup".into())));
        let ("updateContentCommand", LifecycleCommand::Parallel(parts)) = &lifecycle.commands[1] else {
            panic!("{:?}", lifecycle.commands);
        };
        let mut parts = parts.clone();
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            parts,
            vec![
                ("build".into(), LifecycleCommand::Shell("make build".into())),
                ("deps".into(), LifecycleCommand::Exec(vec!["npm".into(), "ci".into()])),
            ]
        );
        assert_eq!(lifecycle.commands.len(), 2, "postCreateCommand is not part of a prebuild");
        assert_eq!(lifecycle.container_keys, vec!["image"]);
    }

    #[test]
    fn order_follows_the_spec_not_the_file() {
        let lifecycle = parse(r#"{"updateContentCommand": "second", "onCreateCommand": ["first", "arg with spaces"]}"#).unwrap();
        assert_eq!(
            lifecycle.commands,
            vec![
                ("onCreateCommand", LifecycleCommand::Exec(vec!["first".into(), "arg with spaces".into()])),
                ("updateContentCommand", LifecycleCommand::Shell("second".into())),
            ]
        );
    }

    #[test]
    fn empty_commands_ask_for_nothing() {
        let lifecycle =
            parse(r#"{"onCreateCommand": "  ", "updateContentCommand": {"a": null, "b": [], "c": ""}, "x": {"onCreateCommand": "no"}}"#)
                .unwrap();
        assert_eq!(lifecycle.commands, vec![]);
        assert_eq!(parse(r#"{"onCreateCommand": null, "updateContentCommand": {}}"#).unwrap().commands, vec![]);
        assert_eq!(parse("\u{feff}{}").unwrap(), PrebuildLifecycle::default(), "a byte order mark is allowed");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(parse("{ not json").unwrap_err().contains("not valid JSON"));
        assert!(parse("[1]").unwrap_err().contains("must hold a JSON object"));
        assert!(parse(r#"{"onCreateCommand": 5}"#).unwrap_err().contains("onCreateCommand must be"));
        assert!(parse(r#"{"onCreateCommand": true}"#).unwrap_err().contains("onCreateCommand must be"));
        assert!(parse(r#"{"onCreateCommand": ["ls", 1]}"#)
            .unwrap_err()
            .contains("onCreateCommand: the items of an array command must be strings"));
        assert!(parse(r#"{"updateContentCommand": {"a": {"b": "c"}}}"#).unwrap_err().contains("updateContentCommand.a: "));
        assert!(parse(r#"{"updateContentCommand": {"a": 1}}"#).unwrap_err().contains("updateContentCommand.a must be"));
    }

    #[test]
    fn commands_read_as_written() {
        assert_eq!(LifecycleCommand::Shell("echo \"hi\"; exit 3".into()).describe(), "echo \"hi\"; exit 3");
        assert_eq!(LifecycleCommand::Exec(vec!["npm".into(), "ci".into()]).describe(), r#"["npm","ci"]"#);
        let parallel = LifecycleCommand::Parallel(vec![("a".into(), LifecycleCommand::Shell("x".into()))]);
        assert_eq!(parallel.describe(), r#"{"a":"x"}"#);
    }

    #[test]
    fn the_file_is_found_in_either_place() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(locate(dir.path()), None);
        std::fs::write(dir.path().join(".devcontainer.json"), "{}").unwrap();
        assert_eq!(locate(dir.path()), Some(dir.path().join(".devcontainer.json")));
        std::fs::create_dir(dir.path().join(".devcontainer")).unwrap();
        std::fs::write(dir.path().join(".devcontainer/devcontainer.json"), "{}").unwrap();
        assert_eq!(locate(dir.path()), Some(dir.path().join(".devcontainer/devcontainer.json")), "the folder wins");
    }
}
