//! Fail-closed checks on JSON Schemas before they become llama.cpp grammars.
//!
//! llama.cpp's converter silently ignores keywords it does not understand, which would let output
//! through that violates the caller's schema (llama.cpp #19051). We accept only the keywords the
//! converter enforces and refuse the rest with a message naming the keyword and where it is.

use serde_json::Value;

/// Keywords that only annotate and need no enforcement.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "strict",
];

/// Keywords the grammar converter enforces.
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

const FORMATS: &[&str] = &["date", "time", "date-time", "uuid"];
const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Returns `Err(reason)` if `schema` uses anything the grammar cannot enforce.
pub(crate) fn check_enforceable(schema: &Value) -> Result<(), String> {
    check_at(schema, "#", 0)
}

fn check_at(schema: &Value, at: &str, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err(format!("the schema nests deeper than 64 levels at {at}"));
    }
    let object = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Object(object) => object,
        _ => return Err(format!("expected a schema object at {at}")),
    };
    for (key, value) in object {
        if ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !ENFORCED.contains(&key.as_str()) {
            return Err(format!("keyword `{key}` at {at} cannot be enforced by the sampler; remove it or use a schema without it"));
        }
        let here = format!("{at}/{key}");
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                let map = value
                    .as_object()
                    .ok_or_else(|| format!("{here} must be an object"))?;
                for (name, sub) in map {
                    check_at(sub, &format!("{here}/{name}"), depth + 1)?;
                }
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| format!("{here} must be an array"))?;
                for (index, sub) in list.iter().enumerate() {
                    check_at(sub, &format!("{here}/{index}"), depth + 1)?;
                }
            }
            "items" | "additionalProperties" => match value {
                Value::Bool(_) => {}
                sub => check_at(sub, &here, depth + 1)?,
            },
            "type" => check_type(value, &here)?,
            "format" => {
                let format = value.as_str().unwrap_or_default();
                if !FORMATS.contains(&format) {
                    return Err(format!(
                        "format `{format}` at {here} cannot be enforced (supported: {})",
                        FORMATS.join(", ")
                    ));
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if object.get("type").and_then(Value::as_str) != Some("integer") =>
            {
                return Err(format!(
                    "`{key}` at {at} is only enforced for \"type\": \"integer\""
                ));
            }
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                if !target.starts_with("#/") {
                    return Err(format!("only local references (\"#/...\") are supported, found `{target}` at {here}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_type(value: &Value, at: &str) -> Result<(), String> {
    let names: Vec<&Value> = match value {
        Value::Array(list) => list.iter().collect(),
        single => vec![single],
    };
    for name in names {
        let name = name.as_str().unwrap_or_default();
        if !TYPES.contains(&name) {
            return Err(format!("unknown type `{name}` at {at}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_enforceable;
    use serde_json::json;

    #[test]
    fn ordinary_object_schema_is_accepted() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
            "required": ["name"], "additionalProperties": false});
        assert_eq!(check_enforceable(&schema), Ok(()));
    }

    #[test]
    fn unenforceable_keywords_are_refused_with_their_location() {
        let schema =
            json!({"type": "object", "properties": {"x": {"type": "number", "multipleOf": 3}}});
        let err = check_enforceable(&schema).unwrap_err();
        assert!(
            err.contains("multipleOf") && err.contains("#/properties/x"),
            "{err}"
        );
        assert!(check_enforceable(&json!({"not": {"type": "string"}})).is_err());
        assert!(check_enforceable(&json!({"type": "number", "minimum": 1.5})).is_err());
        assert!(check_enforceable(&json!({"type": "string", "format": "email"})).is_err());
        assert!(check_enforceable(&json!({"$ref": "http://example.com/s.json"})).is_err());
        assert!(check_enforceable(&json!({"type": "strnig"})).is_err());
    }
}
