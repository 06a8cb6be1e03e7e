//! JSON decoding for untrusted input whose errors can be shown to the sender, logged, or put
//! in a problem body: they say where (the path of field names and indexes, line and column) and
//! what the schema expected, and never repeat a value from the input.
//!
//! serde's own messages quote what they refuse (`invalid type: string "<the value>"`,
//! `unknown field `<the key>``); [`decode`] keeps the part that comes from the schema.
//!
//! ```
//! #[derive(serde::Deserialize, Debug)]
//! struct Checkout { tokens: Vec<String> }
//!
//! let error = ctr_json::decode::<Checkout>(br#"{"tokens": "secret.token.value"}"#).unwrap_err();
//! assert_eq!(error.to_string(), "`tokens`: invalid type: string, expected a sequence (line 1, column 31)");
//! assert!(!error.to_string().contains("secret"));
//! ```

use std::fmt;

use serde::de::DeserializeOwned;

/// What kind of fault the input has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not JSON at all, or JSON with trailing content.
    Syntax,
    /// The input ends in the middle of a value.
    Eof,
    /// Well-formed JSON that does not fit the schema.
    Data,
}

/// Why the input was refused, without any of its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// Field names and `[index]`es down to the fault; empty at the top level.
    pub path: String,
    /// What the schema expected, or what is wrong with the syntax.
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "`{}`: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if self.line > 0 {
            write!(f, " (line {}, column {})", self.line, self.column)?;
        }
        Ok(())
    }
}

/// Decodes one JSON value of type `T` from `bytes`, with nothing after it but whitespace.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let mut segments: Vec<_> = error.path().iter().collect();
        // An unknown field's name is the input's, and is the path's last segment.
        if error.inner().to_string().starts_with("unknown field") {
            segments.pop();
        }
        from_serde(error.inner(), path(&segments))
    })?;
    deserializer
        .end()
        .map_err(|error| from_serde(&error, String::new()))?;
    Ok(value)
}

fn from_serde(error: &serde_json::Error, path: String) -> Error {
    let kind = match error.classify() {
        serde_json::error::Category::Eof => ErrorKind::Eof,
        serde_json::error::Category::Data => ErrorKind::Data,
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => ErrorKind::Syntax,
    };
    let full = error.to_string();
    // serde_json appends " at line L column C"; the position is kept apart.
    let message = match full.rfind(" at line ") {
        Some(at) if error.line() > 0 => &full[..at],
        _ => full.as_str(),
    };
    let message = match kind {
        ErrorKind::Data => schema_part(message),
        // serde_json's syntax messages name the fault, never the input ("expected value",
        // "trailing characters", "control character (\u0000-\u001F) found while parsing a
        // string"), except a number that overflows, which it does not quote either.
        ErrorKind::Syntax | ErrorKind::Eof => message.to_owned(),
    };
    Error {
        kind,
        path,
        message,
        line: error.line(),
        column: error.column(),
    }
}

/// The part of a serde data error that comes from the schema.
///
/// serde's messages have the shapes `invalid type: <unexpected>, expected <expected>`,
/// `invalid value: <unexpected>, expected <expected>`, `unknown variant `<v>`, expected
/// <expected>`, `unknown field `<f>`, expected <expected>`, `missing field `<f>``, `duplicate
/// field `<f>``, `invalid length <n>, expected <expected>`; the `<unexpected>`, `<v>` and
/// `<f>` of an unknown field come from the input and are cut to their kind. A message of any
/// other shape is a type's own (`Error::custom`): ctr's types never quote their input there.
fn schema_part(message: &str) -> String {
    let (unexpected, expected) = match message.split_once(", expected ") {
        Some((left, right)) => (left, Some(right)),
        None => match message.split_once(", there are no ") {
            Some((left, _)) => (left, Some("no fields")),
            None => (message, None),
        },
    };
    let input_quoting = [
        "invalid type: ",
        "invalid value: ",
        "unknown variant",
        "unknown field",
    ]
    .iter()
    .any(|prefix| unexpected.starts_with(prefix));
    let unexpected = if input_quoting {
        // `string "…"`, `integer `5``, `unknown field `x``: keep the words before the quote.
        unexpected
            .split(['"', '`', '\''])
            .next()
            .unwrap_or_default()
            .trim_end()
    } else {
        unexpected
    };
    match expected {
        Some(expected) => format!("{unexpected}, expected {expected}"),
        None => unexpected.to_owned(),
    }
}

/// Field names and indexes. A map key is the input's: one that is not a short plain name
/// (a token, a URL, anything with a `.`) is shown as `<key>`.
fn path(segments: &[&serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && key.len() <= 32
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                out.push_str(if plain { key } else { "<key>" });
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only decoded")]
    struct Body {
        tokens: Vec<String>,
        amount: u64,
        kind: Kind,
        #[serde(default)]
        notes: BTreeMap<String, u8>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code, reason = "only decoded")]
    enum Kind {
        Card,
        Wallet,
    }

    fn message(input: &str) -> String {
        decode::<Body>(input.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn each_shape_of_serde_message_keeps_the_schema_and_drops_the_value() {
        let base = r#""tokens": [], "amount": 1, "kind": "card""#;
        for (input, expected) in [
            (
                r#"{"tokens": "SECRET", "amount": 1, "kind": "card"}"#.to_owned(),
                "`tokens`: invalid type: string, expected a sequence (line 1, column 19)",
            ),
            (
                r#"{"tokens": [7], "amount": 1, "kind": "card"}"#.to_owned(),
                "`tokens[0]`: invalid type: integer, expected a string (line 1, column 13)",
            ),
            (
                r#"{"tokens": [], "amount": -12345, "kind": "card"}"#.to_owned(),
                "`amount`: invalid value: integer, expected u64 (line 1, column 31)",
            ),
            (
                r#"{"tokens": [], "amount": 1, "kind": "SECRET"}"#.to_owned(),
                "`kind`: unknown variant, expected `card` or `wallet` (line 1, column 44)",
            ),
            (
                format!(r#"{{{base}, "SECRET": 1}}"#),
                "unknown field, expected one of `tokens`, `amount`, `kind`, `notes` (line 1, column 52)",
            ),
            (
                r#"{"tokens": []}"#.to_owned(),
                "missing field `amount` (line 1, column 14)",
            ),
            (
                format!(r#"{{{base}, "notes": {{"SECRET.key": "x"}}}}"#),
                "`notes.<key>`: invalid type: string, expected u8 (line 1, column 71)",
            ),
            (
                format!(r#"{{{base}}} SECRET"#),
                "trailing characters (line 1, column 45)",
            ),
            (
                r#"{"tokens": ["SECRET"#.to_owned(),
                "`tokens[0]`: EOF while parsing a string (line 1, column 19)",
            ),
        ] {
            assert_eq!(message(&input), expected, "{input}");
        }
    }

    proptest! {
        /// Whatever string is put wherever, the error does not repeat it.
        #[test]
        fn no_error_repeats_an_input_string(
            secret in "[A-Za-z0-9_-]{4,20}[.+/=~][A-Za-z0-9._~+/=-]{4,40}",
            place in 0usize..6,
        ) {
            let q = serde_json::to_string(&secret).unwrap();
            let input = match place {
                0 => format!(r#"{{"tokens": {q}, "amount": 1, "kind": "card"}}"#),
                1 => format!(r#"{{"tokens": [], "amount": {q}, "kind": "card"}}"#),
                2 => format!(r#"{{"tokens": [], "amount": 1, "kind": {q}}}"#),
                3 => format!(r#"{{"tokens": [], "amount": 1, "kind": "card", {q}: 1}}"#),
                4 => format!(r#"{{"tokens": [], "amount": 1, "kind": "card", "notes": {{{q}: {q}}}}}"#),
                _ => format!(r#"{{"tokens": [1, {q}], "amount": 1, "kind": "card"}}"#),
            };
            let error = decode::<Body>(input.as_bytes()).unwrap_err().to_string();
            prop_assert!(!error.contains(&secret), "{} echoes the input: {}", input, error);
        }
    }
}
