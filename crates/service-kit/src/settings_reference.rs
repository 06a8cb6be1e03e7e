//! The configuration reference, made from the settings structures themselves: each `CTR_*`
//! variable with its type, its default and the first sentence of its doc comment. The guide's
//! reference page is this output (a test fails when it is stale), so a setting added to a
//! structure is documented by the comment it needs anyway.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// One `CTR_*` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The variable, `CTR_` included; a map's key is `<NAME>` (or what its comment calls it).
    pub name: String,
    /// `string`, `integer`, `boolean`, `duration`, `list`, or the values an enum takes.
    pub kind: String,
    /// As the variable would say it; `unset` when there is none.
    pub default: String,
    /// The first sentence of the setting's doc comment, without the variable's name.
    pub meaning: String,
}

/// The settings of `T` with the defaults `defaults` holds, in alphabetical order.
pub fn settings<T: JsonSchema + Serialize>(defaults: &T) -> Vec<Setting> {
    let schema = schemars::schema_for!(T);
    let root = schema.as_value().clone();
    let defaults = serde_json::to_value(defaults).unwrap_or(Value::Null);
    let mut walk = Walk {
        defs: root
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        out: Vec::new(),
    };
    walk.object(&root, &defaults, "CTR_", None);
    merge_variants(walk.out)
}

/// A Markdown table of `settings`.
pub fn table(settings: &[Setting]) -> String {
    let mut out = String::from("| setting | type | default | meaning |\n|---|---|---|---|\n");
    for s in settings {
        let default = if s.default == "unset" {
            "unset".to_owned()
        } else {
            format!("`{}`", s.default.replace('|', "\\|"))
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            s.kind,
            default,
            s.meaning.replace('|', "\\|")
        ));
    }
    out
}

struct Walk {
    defs: Map<String, Value>,
    /// Each setting, with the enum variant it belongs to (a KMS backend), if any.
    out: Vec<(Setting, Option<String>)>,
}

impl Walk {
    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference
                .strip_prefix("#/$defs/")
                .and_then(|name| self.defs.get(name))
                .unwrap_or(node),
            None => node,
        }
    }

    /// The properties of an object schema (flattened ones included, as schemars merges them),
    /// each a setting or, when it is itself a structure or a map, the settings under it.
    fn object(&mut self, node: &Value, defaults: &Value, prefix: &str, only: Option<&str>) {
        let node = self.resolve(node).clone();
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        let descriptions: Vec<String> = properties
            .values()
            .filter_map(|p| p.get("description").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        for (key, property) in properties {
            let name = format!("{prefix}{}", key.to_uppercase());
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned)
                // `CTR_A` / `CTR_B`: one comment for two settings.
                .or_else(|| {
                    descriptions
                        .iter()
                        .find(|d| d.contains(&format!("`{name}`")))
                        .cloned()
                })
                .unwrap_or_default();
            let default = defaults.get(key).cloned().unwrap_or(Value::Null);
            self.property(property, &default, &name, &description, only);
        }
    }

    fn property(
        &mut self,
        property: &Value,
        default: &Value,
        name: &str,
        description: &str,
        only: Option<&str>,
    ) {
        let node = self.resolve(&non_null(property)).clone();
        if node.get("properties").is_some() {
            return self.object(&node, default, &format!("{name}__"), only);
        }
        if let Some(variants) = node.get("oneOf").and_then(Value::as_array)
            && variants
                .iter()
                .any(|v| self.resolve(v).get("properties").is_some())
        {
            return self.variants(variants, name, description);
        }
        if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
            let key = placeholder(description, name);
            let values = self.resolve(values).clone();
            if values.get("properties").is_some() {
                let defaults = defaults_of(&values);
                return self.object(&values, &defaults, &format!("{name}__{key}__"), only);
            }
            return self.push(
                format!("{name}__{key}"),
                kind(&values),
                default,
                description,
                only,
            );
        }
        self.push(name.to_owned(), kind(&node), default, description, only);
    }

    /// An internally tagged enum (the KMS backend): the tag, then each variant's settings,
    /// marked with the variant they belong to.
    fn variants(&mut self, variants: &[Value], name: &str, description: &str) {
        let mut tags = Vec::new();
        let mut tag_key = String::new();
        for variant in variants {
            let variant = self.resolve(variant).clone();
            let Some(properties) = variant.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (key, property) in properties {
                if let Some(tag) = property.get("const").and_then(Value::as_str) {
                    tag_key = key.clone();
                    tags.push(tag.to_owned());
                }
            }
        }
        self.push(
            format!("{name}__{}", tag_key.to_uppercase()),
            tags.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            &Value::Null,
            description,
            None,
        );
        for (variant, tag) in variants.iter().zip(&tags) {
            let mut variant = self.resolve(variant).clone();
            let defaults = defaults_of(&variant);
            if let Some(map) = variant.get_mut("properties").and_then(Value::as_object_mut) {
                map.remove(&tag_key);
            }
            self.object(&variant, &defaults, &format!("{name}__"), Some(tag));
        }
    }

    fn push(
        &mut self,
        name: String,
        kind: String,
        default: &Value,
        description: &str,
        only: Option<&str>,
    ) {
        let setting = Setting {
            name,
            kind,
            default: spoken(default),
            meaning: meaning(description),
        };
        self.out.push((setting, only.map(str::to_owned)));
    }
}

/// The defaults a variant's schema states (`#[serde(default = ...)]` fields).
fn defaults_of(variant: &Value) -> Value {
    let mut defaults = Map::new();
    if let Some(properties) = variant.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            if let Some(default) = property.get("default") {
                defaults.insert(key.clone(), default.clone());
            }
        }
    }
    Value::Object(defaults)
}

/// Settings of the same name in several variants (`CTR_KMS__CA_FILE` of vault and aws) as one,
/// each marked with the variants it belongs to: `(vault, aws) ...`.
fn merge_variants(settings: Vec<(Setting, Option<String>)>) -> Vec<Setting> {
    let mut merged: Vec<(Setting, Vec<String>)> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for (setting, variant) in settings {
        let i = *at.entry(setting.name.clone()).or_insert_with(|| {
            merged.push((setting, Vec::new()));
            merged.len() - 1
        });
        merged[i].1.extend(variant);
    }
    merged
        .into_iter()
        .map(|(mut setting, variants)| {
            if !variants.is_empty() {
                setting.meaning = format!("({}) {}", variants.join(", "), setting.meaning);
            }
            setting
        })
        .collect()
}

/// `Option<T>`'s schema without its `null` half.
fn non_null(node: &Value) -> Value {
    if let Some(any) = node.get("anyOf").and_then(Value::as_array) {
        let rest: Vec<&Value> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [one] = rest.as_slice() {
            return (*one).clone();
        }
    }
    node.clone()
}

fn kind(node: &Value) -> String {
    if node.get("format").and_then(Value::as_str) == Some("duration") {
        return "duration".into();
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    if let Some(values) = node.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<String> = values
            .iter()
            .filter_map(|v| v.get("const").and_then(Value::as_str))
            .map(|v| format!("`{v}`"))
            .collect();
        if !consts.is_empty() {
            return consts.join(", ");
        }
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    match types.iter().find(|t| **t != "null") {
        Some(&"array") => "list".into(),
        Some(&"object") => "map".into(),
        Some(t) => (*t).into(),
        None => "string".into(),
    }
}

/// A default as the variable would say it: strings bare, lists as `[a, b]`.
fn spoken(value: &Value) -> String {
    match value {
        Value::Null => "unset".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(spoken).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "unset".into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", spoken(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A map's key as the comment names it (`CTR_POINT_VALUES__<CURRENCY>`), else `<NAME>`.
fn placeholder(description: &str, name: &str) -> String {
    description
        .split(&format!("`{name}__"))
        .nth(1)
        .and_then(|rest| rest.strip_prefix('<'))
        .and_then(|rest| rest.split_once('>'))
        .map(|(key, _)| format!("<{key}>"))
        .unwrap_or_else(|| "<NAME>".into())
}

/// The first sentence of a doc comment, without the `CTR_...`: that names the setting.
pub fn meaning(description: &str) -> String {
    let text = description
        .split("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ");
    let text = text.trim();
    let text = match text.find("`: ") {
        Some(i) if text.starts_with("`CTR_") => &text[i + 3..],
        _ => text,
    };
    // The first full stop outside parentheses ("(e.g. 90d)" is not one).
    let mut depth = 0_i32;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '.' if depth == 0 && text[i + 1..].starts_with(' ') => {
                end = i + 1;
                break;
            }
            _ => {}
        }
    }
    let sentence = text[..end].trim();
    let mut chars = sentence.chars();
    let mut sentence: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn the_first_sentence_is_kept_without_the_name() {
        assert_eq!(
            meaning("`CTR_LOG`: a tracing filter such as `info`. More words."),
            "A tracing filter such as `info`."
        );
        assert_eq!(
            placeholder("`CTR_POINT_VALUES__<CURRENCY>`: what", "CTR_POINT_VALUES"),
            "<CURRENCY>"
        );
        assert_eq!(placeholder("nothing", "CTR_X"), "<NAME>");
        assert_eq!(
            meaning("How long a new leaf is valid (e.g. 90d, 12h, 1m)"),
            "How long a new leaf is valid (e.g. 90d, 12h, 1m)."
        );
    }

    #[test]
    fn every_server_setting_has_a_type_a_default_and_a_meaning() {
        let settings = settings(&crate::ServerConfig::defaults("<service>"));
        let named = |name: &str| settings.iter().find(|s| s.name == name).unwrap();
        let (log, grace) = (named("CTR_LOG"), named("CTR_SHUTDOWN_GRACE"));
        assert_eq!(
            (log.kind.as_str(), log.default.as_str()),
            ("string", "info")
        );
        assert_eq!(
            (grace.kind.as_str(), grace.default.as_str()),
            ("duration", "10s")
        );
        let timeout = named("CTR_KEEP_ALIVE_TIMEOUT");
        assert!(!timeout.meaning.is_empty(), "{timeout:?}");
        let empty: Vec<&Setting> = settings.iter().filter(|s| s.meaning.is_empty()).collect();
        assert!(empty.is_empty(), "settings without a meaning: {empty:?}");
        assert!(settings.iter().any(|s| s.name == "CTR_AUTH_ISSUER"));
    }
}
