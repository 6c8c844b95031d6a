//! The contract check every API test call goes through: the response body must validate against
//! the schema the vendored contract (`docs/reference/clinic.v1.yaml`) gives for that operation
//! and status (errors without a declared schema against `error.v1`), read with a JSON Schema
//! validator after turning OpenAPI 3.0's `nullable` into JSON Schema.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The contract, loaded once.
pub struct Contract {
    /// The contract as JSON.
    pub spec: Value,
    /// Path templates split into segments.
    templates: Vec<(String, Vec<String>)>,
}

/// Where the contract is: `CLINIC_CONTRACT`, else the copy vendored in the repository
/// (`docs/reference/clinic.v1.yaml`), so a clone alone runs these tests.
fn location() -> std::path::PathBuf {
    match std::env::var_os("CLINIC_CONTRACT") {
        Some(path) => std::path::PathBuf::from(path),
        None => clinic::testkit::repo_root(0).join("docs/reference/clinic.v1.yaml"),
    }
}

/// OpenAPI 3.0 `nullable: true` as JSON Schema: `anyOf` the schema or null.
fn nullable_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for child in map.values_mut() {
                nullable_to_json_schema(child);
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(map));
                map.insert("anyOf".into(), json!([inner, { "type": "null" }]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

impl Contract {
    /// The contract (panics with where to find it when it is missing).
    pub fn get() -> &'static Contract {
        static CONTRACT: OnceLock<Contract> = OnceLock::new();
        CONTRACT.get_or_init(|| {
            let path = location();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "the contract {} is not readable ({e}); set CLINIC_CONTRACT",
                    path.display()
                )
            });
            let mut spec: Value = serde_yaml_ng::from_str(&text).expect("the contract is YAML");
            nullable_to_json_schema(&mut spec);
            let templates = spec["paths"]
                .as_object()
                .expect("paths")
                .keys()
                .map(|t| (t.clone(), t.split('/').map(str::to_owned).collect()))
                .collect();
            Contract { spec, templates }
        })
    }

    /// The template a concrete path matches (the one with the most literal segments).
    pub fn template(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.templates
            .iter()
            .filter(|(_, t)| {
                t.len() == segments.len()
                    && t.iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .max_by_key(|(_, t)| t.iter().filter(|s| !s.starts_with('{')).count())
            .map(|(template, _)| template.as_str())
    }

    /// The contract's operation at exactly this path template and method.
    pub fn operation(&self, template: &str, method: &str) -> Option<&Value> {
        self.spec["paths"].get(template)?.get(method.to_lowercase())
    }

    /// Checks one answer. `Ok(false)`: the operation is not in the contract (nothing to check).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<bool, String> {
        let Some(template) = self.template(path) else {
            return Ok(false);
        };
        let Some(operation) = self.spec["paths"][template].get(method.to_lowercase()) else {
            return Ok(false);
        };
        let declared = operation["responses"].get(status.to_string());
        let schema = match declared {
            Some(response) => match response.pointer("/content/application~1json/schema") {
                Some(schema) => schema.clone(),
                // No body declared: an empty one, or (success) one the contract leaves open.
                None if body.is_null() || status < 400 => return Ok(true),
                None => json!({ "$ref": "#/components/schemas/error.v1" }),
            },
            None if status >= 400 => json!({ "$ref": "#/components/schemas/error.v1" }),
            None => {
                return Err(format!(
                    "{method} {template}: the contract does not declare status {status}"
                ));
            }
        };
        let mut root = json!({ "components": self.spec["components"].clone() });
        root.as_object_mut()
            .expect("object")
            .extend(schema.as_object().cloned().unwrap_or_default());
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| {
                format!("{method} {template} {status}: the schema does not compile: {e}")
            })?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(true)
        } else {
            Err(format!(
                "{method} {template} {status}: the body breaks the contract: {errors:?}\nbody: {body}"
            ))
        }
    }
}

#[test]
fn the_check_catches_a_body_that_breaks_the_contract() {
    let contract = Contract::get();
    let good = json!({
        "id": "0123456789abcdef01234567", "name": "N", "shareCode": "ABCD-EFGH-JKLM",
        "canMigrate": true, "createdTime": "2026-11-26T10:00:00Z", "updatedTime": "2026-11-26T10:00:00Z",
        "tierDescription": "Free", "tier": "tier0100", "preferredBgUnits": "mg/dL",
    });
    assert_eq!(
        contract.check("GET", "/v1/clinics/0123456789abcdef01234567", 200, &good),
        Ok(true)
    );
    let mut bad = good.clone();
    bad["shareCode"] = json!("abcd");
    bad.as_object_mut().expect("object").remove("tier");
    let error = contract
        .check("GET", "/v1/clinics/0123456789abcdef01234567", 200, &bad)
        .expect_err("invalid");
    assert!(
        error.contains("shareCode") && error.contains("tier"),
        "{error}"
    );
    let error = contract
        .check(
            "GET",
            "/v1/clinics/0123456789abcdef01234567",
            404,
            &json!({ "message": "x" }),
        )
        .expect_err("error bodies need a code");
    assert!(error.contains("code"), "{error}");
    assert_eq!(
        contract.template("/v1/clinics/share_code/ABCD-EFGH-JKLM"),
        Some("/v1/clinics/share_code/{shareCode}")
    );
    assert_eq!(
        contract.check(
            "POST",
            "/confirm/send/invite/0123456789/clinic",
            200,
            &json!({})
        ),
        Ok(false)
    );
}
