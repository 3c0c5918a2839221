//! The parts of `devcontainer.json` a prebuild runs: `onCreateCommand` and
//! `updateContentCommand`, in that order (the devcontainer spec's prebuild
//! lifecycle; `postCreateCommand` and later ones belong to a user's session).
//!
//! The file is JSON with comments (`//`, `/* */`) and trailing commas (the
//! spec's "JSONC"), so [`jsonc_to_json`] (`jsonc.rs`) turns it into plain
//! JSON for serde_json first; [`locate`] (`locate.rs`) finds the file in a
//! repository. This module only parses; running the commands is the
//! runner's business.

mod jsonc;
mod locate;

pub use jsonc::jsonc_to_json;
pub use locate::{locate, Located};
use serde_json::Value;

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
/// string, array or object), as the spec treats those. `key` names the
/// value in errors. Also reads the lifecycle keys of an image's
/// `devcontainer.metadata` entries, which take the same forms.
pub fn command_of(key: &str, value: &Value) -> Result<Option<LifecycleCommand>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
