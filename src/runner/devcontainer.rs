//! The parts of `devcontainer.json` a prebuild runs: `onCreateCommand` and
//! `updateContentCommand`. The file is JSON with comments (`//`, `/* */`)
//! and trailing commas (the devcontainer spec's JSONC), so it is turned into
//! plain JSON first.

use serde_json::Value;

/// One lifecycle command as the spec allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleCommand {
    /// A string: run by a shell.
    Shell(String),
    /// An array: the program and its arguments, no shell.
    Exec(Vec<String>),
    /// An object: named commands that run in parallel.
    Parallel(Vec<(String, LifecycleCommand)>),
}

impl LifecycleCommand {
    /// How the command reads in messages: as written in the file.
    pub fn describe(&self) -> String {
        match self {
            LifecycleCommand::Shell(line) => line.clone(),
            LifecycleCommand::Exec(argv) => format!("{argv:?}"),
            LifecycleCommand::Parallel(commands) => {
                commands.iter().map(|(name, c)| format!("{name}: {}", c.describe())).collect::<Vec<_>>().join(", ")
            }
        }
    }
}

/// The prebuild lifecycle of a devcontainer.json, in the order it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrebuildLifecycle {
    pub commands: Vec<(&'static str, LifecycleCommand)>,
}

/// Parses devcontainer.json text (JSONC) into its prebuild lifecycle.
pub fn parse(text: &str) -> Result<PrebuildLifecycle, String> {
    let json = jsonc_to_json(text);
    let value: Value = serde_json::from_str(&json).map_err(|e| format!("devcontainer.json is not valid JSON with comments: {e}"))?;
    let object = value.as_object().ok_or("devcontainer.json must hold a JSON object")?;
    let mut commands = Vec::new();
    for key in ["onCreateCommand", "updateContentCommand"] {
        if let Some(command) = object.get(key) {
            if let Some(command) = command_of(key, command)? {
                commands.push((key, command));
            }
        }
    }
    Ok(PrebuildLifecycle { commands })
}

fn command_of(key: &str, value: &Value) -> Result<Option<LifecycleCommand>, String> {
    Ok(match value {
        Value::Null => None,
        Value::String(line) if line.trim().is_empty() => None,
        Value::String(line) => Some(LifecycleCommand::Shell(line.clone())),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(LifecycleCommand::Exec(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_string).ok_or_else(|| format!("{key}: array items must be strings")))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(entries) => {
            let mut parallel = Vec::new();
            for (name, entry) in entries {
                match command_of(&format!("{key}.{name}"), entry)? {
                    Some(LifecycleCommand::Parallel(_)) => return Err(format!("{key}.{name}: commands cannot nest")),
                    Some(command) => parallel.push((name.clone(), command)),
                    None => {}
                }
            }
            (!parallel.is_empty()).then_some(LifecycleCommand::Parallel(parallel))
        }
        _ => return Err(format!("{key} must be a string, an array of strings or an object")),
    })
}

/// Removes `//` and `/* */` comments and trailing commas, leaving strings
/// (which may contain `//` and escaped quotes) untouched.
pub fn jsonc_to_json(text: &str) -> String {
    let without_comments = strip_comments(text);
    strip_trailing_commas(&without_comments)
}

fn strip_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut in_string) = (0, false);
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            i += 1;
        } else if c == '"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn strip_trailing_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if !matches!(next, Some('}') | Some(']')) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_go_strings_stay() {
        let text = r#"{
            // a comment
            "name": "has // inside", /* block
            comment */ "url": "http://x/*y*/",
            "escaped": "a \" // b",
            "list": [1, 2, ],
        }"#;
        let value: Value = serde_json::from_str(&jsonc_to_json(text)).unwrap();
        assert_eq!(value["name"], "has // inside");
        assert_eq!(value["url"], "http://x/*y*/");
        assert_eq!(value["escaped"], "a \" // b");
        assert_eq!(value["list"], serde_json::json!([1, 2]));
    }

    #[test]
    fn the_three_command_forms() {
        let lifecycle = parse(
            r#"{
              "image": "x",
              "onCreateCommand": "make setup", // a shell line
              "updateContentCommand": { "deps": ["npm", "ci"], "build": "make build", },
              "postCreateCommand": "not part of a prebuild",
            }"#,
        )
        .unwrap();
        assert_eq!(
            lifecycle.commands,
            vec![
                ("onCreateCommand", LifecycleCommand::Shell("make setup".into())),
                (
                    "updateContentCommand",
                    LifecycleCommand::Parallel(vec![
                        ("build".into(), LifecycleCommand::Shell("make build".into())),
                        ("deps".into(), LifecycleCommand::Exec(vec!["npm".into(), "ci".into()])),
                    ])
                ),
            ]
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(parse("{ not json").unwrap_err().contains("not valid JSON"));
        assert!(parse(r#"{"onCreateCommand": 5}"#).unwrap_err().contains("onCreateCommand must be"));
        assert!(parse(r#"{"onCreateCommand": [1]}"#).unwrap_err().contains("array items must be strings"));
        assert_eq!(parse("{}").unwrap().commands, vec![]);
    }
}
