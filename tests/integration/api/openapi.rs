//! `/v1/openapi.json`, generated from the code, against the contract: every operation it lists
//! is the contract's (path, method, operation id, path parameters), declares only statuses the
//! contract declares for it (plus the error answers `{code, message}` every operation may give),
//! and the two operations outside the contract are the known ones.

use reqwest::{Method, StatusCode};

use serde_json::{Value, json};

use super::TestApi;
use super::contract::Contract;
use super::validation::{request_schema, resolve};

/// Operations this service adds beside the contract.
const OUTSIDE: [&str; 2] = ["DeclinePatientInvitation", "SendPatientInvite"];
/// Answer properties the API adds to the contract's schemas, each stated in the served document
/// and in `docs/api.md` ("Extensions").
const EXTENSIONS: [&str; 1] = ["failureReason"];

#[tokio::test]
async fn the_generated_document_agrees_with_the_contract() {
    let api = TestApi::spawn().await;
    let (status, document) = api.send(api.request(Method::GET, "/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let contract = Contract::get();

    let mut operations = 0;
    let mut outside = Vec::new();
    let mut problems = Vec::new();
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            operations += 1;
            let id = operation["operationId"].as_str().expect("operationId");
            let Some(theirs) = contract.operation(path, method) else {
                outside.push(id.to_owned());
                continue;
            };
            if theirs["operationId"] != id {
                problems.push(format!(
                    "{method} {path}: operationId {id}, contract {}",
                    theirs["operationId"]
                ));
            }
            let ours_params: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for param in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            {
                if !ours_params.contains(&param) {
                    problems.push(format!(
                        "{method} {path}: path parameter {param} is not declared"
                    ));
                }
            }
            if let (Some(ours), Some(theirs)) = (request_schema(operation), request_schema(theirs))
            {
                let at = format!("{id} request");
                typed_within(&document, &contract.spec, ours, theirs, &at, &mut problems);
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let ours = &response["content"]["application/json"]["schema"];
                let theirs = declared_or_named(&contract.spec, theirs, status, response);
                if status.starts_with('2') && !ours.is_null() {
                    let at = format!("{id} {status}");
                    typed_within(&document, &contract.spec, ours, &theirs, &at, &mut problems);
                }
            }
            for status in operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
            {
                let code: u16 = status.parse().expect("numeric status");
                if code < 400 && theirs["responses"].get(status).is_none() {
                    problems.push(format!(
                        "{method} {path}: status {status} is not the contract's"
                    ));
                }
            }
        }
    }
    outside.sort();
    assert_eq!(outside, OUTSIDE.to_vec());
    assert_eq!(operations, 54, "every implemented operation is documented");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(document["components"]["securitySchemes"]["sessionToken"].is_object());
}

/// The contract's schema of the answer `status` of `theirs`; where the contract declares none
/// (a few answers are only "OK"), the schema the served response's description names
/// (`clinician.v1`; `confirmations.v1` for a list of `confirmation.v1`).
fn declared_or_named(contract: &Value, theirs: &Value, status: &str, ours: &Value) -> Value {
    let declared = &theirs["responses"][status]["content"]["application/json"]["schema"];
    if !declared.is_null() {
        return declared.clone();
    }
    let name = ours["description"].as_str().unwrap_or_default();
    let schemas = &contract["components"]["schemas"];
    if schemas.get(name).is_some() {
        return json!({ "$ref": format!("#/components/schemas/{name}") });
    }
    match name.strip_suffix("s.v1") {
        Some(single) => {
            json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{single}.v1") } })
        }
        None => Value::Null,
    }
}

/// Checks that the served schema `ours` is typed all the way down (no schema that accepts
/// anything) and names only properties the contract's `theirs` has.
fn typed_within(
    served: &Value,
    contract: &Value,
    ours: &Value,
    theirs: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let ours = resolve(served, ours);
    let theirs = resolve(contract, theirs);
    if let Some(items) = ours.get("items") {
        typed_within(
            served,
            contract,
            items,
            &theirs["items"],
            &format!("{at}[]"),
            problems,
        );
        return;
    }
    let Some(properties) = ours["properties"].as_object() else {
        if ours.get("type").is_none() && ours.get("enum").is_none() {
            problems.push(format!("{at}: untyped schema {ours}"));
        }
        return;
    };
    for (name, schema) in properties {
        let field = format!("{at}.{name}");
        match theirs["properties"].get(name) {
            Some(their_field) => {
                typed_within(served, contract, schema, their_field, &field, problems)
            }
            None if EXTENSIONS.contains(&name.as_str()) => {}
            None => problems.push(format!("{field}: not a property of the contract's schema")),
        }
    }
}
