//! Generates the client from the contract the repository vendors
//! (`docs/reference/clinic.v1.yaml`) with progenitor, keeping the operations the API implements
//! ([`OPERATIONS`]; a test holds the list equal to the served document's). So a change of the
//! contract that touches one of them changes the client's types, and code using them stops
//! compiling where it no longer fits.
//!
//! Four adaptations, each because the generator or the contract's shape needs it:
//! - JSON bodies only (the contract offers others on a few operations; the API reads JSON);
//! - `clinicTimezone.v1` is a plain string: typify cannot name `GMT+0` and `GMT-0` apart;
//! - patterns with Unicode (`\p{…}`) or POSIX classes are left to the server: the generated
//!   checks run ECMAScript expressions without Unicode mode, which read them otherwise;
//! - every request body gets a copy of its schema without `required` (`<name>.request`): the
//!   contract reuses answer schemas as request bodies, whose required fields (`id`,
//!   `shareCode`, …) the server fills.

use serde_json::Value;

/// The contract's operations the API serves (`operations.txt`, one per line; `/v1/openapi.json`
/// lists the same, besides the two hydrophone routes outside the contract).
const OPERATIONS: &str = include_str!("operations.txt");

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// Removes the `pattern`s the generated checks would read otherwise than the contract means them:
/// they run ECMAScript regular expressions (regress) without Unicode mode, where `\p{L}` is not
/// a letter class, and know no POSIX classes (`[[:graph:]]`). The server checks those names.
fn drop_foreign_patterns(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let foreign = map
                .get("pattern")
                .and_then(Value::as_str)
                .is_some_and(|p| p.contains("\\p{") || p.contains("[[:"));
            if foreign {
                map.remove("pattern");
            }
            map.values_mut().for_each(drop_foreign_patterns);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_foreign_patterns),
        _ => {}
    }
}

/// Keeps only the JSON media type of a `content` map.
fn json_only(content: Option<&mut Value>) {
    if let Some(media) = content.and_then(Value::as_object_mut) {
        media.retain(|name, _| name == "application/json");
    }
}

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo"));
    let contract = manifest.join("../../docs/reference/clinic.v1.yaml");
    println!("cargo::rerun-if-changed={}", contract.display());
    println!("cargo::rerun-if-changed=operations.txt");
    let text = std::fs::read_to_string(&contract).expect("the vendored contract");
    let mut spec: Value = serde_yaml_ng::from_str(&text).expect("the contract is YAML");

    let mut requests = Vec::new();
    let paths = spec["paths"].as_object_mut().expect("paths");
    for item in paths.values_mut() {
        let item = item.as_object_mut().expect("a path item");
        for method in METHODS {
            let Some(operation) = item.get_mut(method) else {
                continue;
            };
            let id = operation["operationId"].as_str().unwrap_or_default();
            if !OPERATIONS.lines().any(|kept| kept == id) {
                item.remove(method);
                continue;
            }
            json_only(operation.pointer_mut("/requestBody/content"));
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                for response in responses.values_mut() {
                    json_only(response.get_mut("content"));
                }
            }
            if let Some(reference) =
                operation.pointer_mut("/requestBody/content/application~1json/schema/$ref")
            {
                let name = reference
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                *reference = Value::from(format!("#/components/schemas/{name}.request"));
                requests.push(name);
            }
        }
    }
    paths.retain(|_, item| METHODS.iter().any(|m| item.get(m).is_some()));

    let schemas = spec["components"]["schemas"]
        .as_object_mut()
        .expect("schemas");
    if let Some(zone) = schemas
        .get_mut("clinicTimezone.v1")
        .and_then(Value::as_object_mut)
    {
        zone.remove("enum");
    }
    for name in requests {
        let mut request = schemas
            .get(&name)
            .cloned()
            .expect("a request body's schema");
        if let Some(object) = request.as_object_mut() {
            object.remove("required");
        }
        schemas.insert(format!("{name}.request"), request);
    }

    drop_foreign_patterns(&mut spec);
    let spec: openapiv3::OpenAPI = serde_json::from_value(spec).expect("OpenAPI 3.0");
    let tokens = progenitor::Generator::default()
        .generate_tokens(&spec)
        .expect("the client generates");
    let file = syn::parse2(tokens).expect("generated Rust parses");
    let out =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo")).join("client.rs");
    std::fs::write(out, prettyplease::unparse(&file)).expect("written");
}
