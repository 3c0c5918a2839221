//! JSON with comments (the spec's "JSONC"): devcontainer.json may have
//! `//` and `/* */` comments and trailing commas, which serde_json does not
//! take, so [`jsonc_to_json`] turns the text into plain JSON first.

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
    use serde_json::{json, Value};

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
            assert!(serde_json::from_str::<Value>(&jsonc_to_json(text)).is_err(), "{text:?}");
        }
    }
}
