//! `/v1/openapi.json`, generated from the code, against the contract: every operation it lists
//! is the contract's (path, method, operation id, path parameters), declares only statuses the
//! contract declares for it (plus the error answers `{code, message}` every operation may give),
//! and the two operations outside the contract are the known ones.

use reqwest::{Method, StatusCode};

use super::TestApi;
use super::contract::Contract;

/// Operations this service adds beside the contract.
const OUTSIDE: [&str; 2] = ["DeclinePatientInvitation", "SendPatientInvite"];

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
    assert_eq!(operations, 33, "every implemented operation is documented");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(document["components"]["securitySchemes"]["sessionToken"].is_object());
}
