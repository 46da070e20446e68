#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

#[test]
fn inputs_are_strict_with_their_checks_and_outputs_are_types() {
    let schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "title": {"type": "string", "maxLength": 200, "x-text": {"trim": true, "minLength": 1}},
            "mood": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
            "at": {"type": "integer", "format": "epoch-millis", "minimum": 0, "maximum": 9}
        },
        "required": ["title"]
    });
    let input = Gen::new(Mode::Input, "t").zod(&schema).unwrap();
    assert_eq!(
        input,
        "z.strictObject({\n  at: rules.instant({ minimum: 0, maximum: 9 }).optional(),\n  mood: z.int().min(1).max(5).nullable().optional(),\n  tags: z.array(rules.text({  })).max(50).optional(),\n  title: rules.text({ maxLength: 200, checked: { minLength: 1, trim: true } }),\n})"
    );
    let output = Gen::new(Mode::Output, "t").zod(&schema).unwrap();
    assert!(output.starts_with("z.object({"), "{output}");
    assert!(output.contains("mood: z.number().nullable().optional()"));
}

#[test]
fn nullable_references_enums_and_unions() {
    let output = Gen::new(Mode::Output, "t");
    assert_eq!(
        output
            .zod(&json!({"anyOf": [{"$ref": "#/$defs/Prompt"}, {"type": "null"}]}))
            .unwrap(),
        "Prompt.nullable()"
    );
    assert_eq!(
        output
            .zod(&json!({"oneOf": [{"const": "a", "description": "A"}, {"const": "b"}]}))
            .unwrap(),
        "z.enum([\"a\", \"b\"])"
    );
    assert_eq!(
        output
            .zod(&json!({"type": "string", "enum": ["x", "y"]}))
            .unwrap(),
        "z.enum([\"x\", \"y\"])"
    );
    assert!(output.zod(&json!({"type": ["string", "integer"]})).is_err());
}
