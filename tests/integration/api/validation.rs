//! Validation from the contract: for every field the served `/v1/openapi.json` says a request
//! body accepts, every constraint `clinic.v1.yaml` states for that field (enum, lengths, pattern,
//! format, minItems, uniqueItems, bounds) is sent broken, one at a time, into an otherwise valid
//! request, and must be answered 400 with a message naming the field. A field added to a request
//! type later appears in the served document and is checked here without anyone listing it.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::contract::Contract;
use super::{TestApi, service, user};

/// `schema` with `$ref`s followed, the non-null branch of a `oneOf`/`anyOf` taken and an
/// `allOf` merged: what a value of it must look like.
pub fn resolve(document: &Value, schema: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return resolve(document, &document["components"]["schemas"][name]);
    }
    for choice in ["oneOf", "anyOf"] {
        if let Some(branch) = schema[choice]
            .as_array()
            .and_then(|branches| branches.iter().find(|b| b["type"] != "null"))
        {
            return resolve(document, branch);
        }
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut merged = schema.clone();
        merged.as_object_mut().map(|m| m.remove("allOf"));
        for part in parts {
            let part = resolve(document, part);
            for (key, value) in part.as_object().into_iter().flatten() {
                match (key.as_str(), merged.get_mut(key)) {
                    ("properties", Some(Value::Object(props))) => {
                        props.extend(value.as_object().cloned().unwrap_or_default());
                    }
                    (_, Some(_)) => {}
                    (_, None) => {
                        merged[key] = value.clone();
                    }
                }
            }
        }
        return merged;
    }
    schema.clone()
}

/// The JSON body schema of an operation's request (`None` without one).
pub fn request_schema(operation: &Value) -> Option<&Value> {
    operation["requestBody"]["content"]["application/json"]
        .get("schema")
        .filter(|s| !s.is_null())
}

/// Whether the schema describes an array.
fn is_array(schema: &Value) -> bool {
    schema["type"] == "array"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("array")))
        || schema.get("items").is_some()
}

/// A value the contract's `schema` accepts, for filling the parents and siblings of a broken
/// field.
fn sample(contract: &Value, schema: &Value) -> Value {
    let schema = resolve(contract, schema);
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if is_array(&schema) {
        return json!([sample(contract, &schema["items"])]);
    }
    if let Some(properties) = schema["properties"].as_object() {
        let mut out = serde_json::Map::new();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            let readonly = resolve(contract, &properties[name])["readOnly"] == true;
            if !readonly {
                out.insert(name.to_owned(), sample(contract, &properties[name]));
            }
        }
        return Value::Object(out);
    }
    match schema["format"].as_str() {
        Some("email") => return json!("someone@example.org"),
        Some("date") => return json!("2000-01-01"),
        Some("date-time") => return json!("2000-01-01T00:00:00Z"),
        Some("uri") => return json!("https://example.org"),
        _ => {}
    }
    match schema["type"].as_str() {
        Some("boolean") => json!(true),
        Some("integer" | "number") => json!(1),
        Some("object") => json!({}),
        _ => json!("x1"),
    }
}

/// Values that break one constraint of `schema` each: (which constraint, the value).
fn violations(contract: &Value, schema: &Value) -> Vec<(String, Value)> {
    let schema = resolve(contract, schema);
    let mut out = Vec::new();
    if is_array(&schema) {
        if schema["minItems"].as_u64().is_some_and(|n| n > 0) {
            out.push(("minItems".into(), json!([])));
        }
        if schema["uniqueItems"] == true {
            let item = sample(contract, &schema["items"]);
            out.push(("uniqueItems".into(), json!([item.clone(), item])));
        }
        return out;
    }
    if schema["enum"].is_array() {
        out.push(("enum".into(), json!("not-one-of-them")));
    }
    if let Some(n) = schema["minLength"].as_u64().filter(|n| *n > 0) {
        out.push((
            "minLength".into(),
            json!("a".repeat(usize::try_from(n - 1).unwrap_or(0))),
        ));
    }
    if let Some(n) = schema["maxLength"].as_u64() {
        out.push((
            "maxLength".into(),
            json!("a".repeat(usize::try_from(n + 1).unwrap_or(0))),
        ));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        let matcher = jsonschema::validator_for(&json!({ "type": "string", "pattern": pattern }))
            .expect("the contract's pattern compiles");
        let breaking = ["!", "ZZZZZZZZZZZZZZZZZZZZZZZZ", " x", "\u{1}", ""]
            .into_iter()
            .find(|candidate| !matcher.is_valid(&json!(candidate)))
            .expect("a string the pattern refuses");
        out.push((format!("pattern {pattern}"), json!(breaking)));
    }
    let format = match schema["format"].as_str() {
        Some("email") => Some("not-an-email"),
        Some("date") => Some("2001-02-30"),
        Some("date-time") => Some("yesterday"),
        Some("uri") => Some("not a uri"),
        _ => None,
    };
    if let Some(value) = format {
        out.push((format!("format {}", schema["format"]), json!(value)));
    }
    if let Some(n) = schema["minimum"].as_f64() {
        out.push(("minimum".into(), json!(n - 1.0)));
    }
    if let Some(n) = schema["maximum"].as_f64() {
        out.push(("maximum".into(), json!(n + 1.0)));
    }
    out
}

/// One field to break: where it is (as the error message names it), the body holding the broken
/// value, and which constraint it breaks.
struct Case {
    field: String,
    constraint: String,
    body: Value,
}

/// Every broken field of the served request schema `ours`, checked against the contract's
/// `theirs`, put into `base` (the valid body) one at a time.
fn cases(
    served: &Value,
    contract: &Value,
    ours: &Value,
    theirs: &Value,
    base: &Value,
) -> Vec<Case> {
    let walker = Walker {
        served,
        contract,
        root: theirs,
        base,
    };
    let mut out = Vec::new();
    walker.walk(ours, theirs, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone)]
enum Step {
    Key(String),
    Item,
}

/// The field as error messages name it: `phoneNumbers[0].type`.
fn field_name(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) if out.is_empty() => out.push_str(key),
            Step::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Step::Item => out.push_str("[0]"),
        }
    }
    out
}

struct Walker<'a> {
    served: &'a Value,
    contract: &'a Value,
    /// The contract's schema of the whole body.
    root: &'a Value,
    /// The valid body.
    base: &'a Value,
}

impl Walker<'_> {
    /// `current` (a part of the body of schema `theirs`) with `value` at `steps`, the parents
    /// missing from it filled with contract samples.
    fn with_value(&self, theirs: &Value, current: &Value, steps: &[Step], value: Value) -> Value {
        let Some((first, rest)) = steps.split_first() else {
            return value;
        };
        let schema = resolve(self.contract, theirs);
        match first {
            Step::Key(key) => {
                let child_schema = &schema["properties"][key];
                let mut object = current.as_object().cloned().unwrap_or_default();
                let child = object
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| sample(self.contract, child_schema));
                object.insert(
                    key.clone(),
                    self.with_value(child_schema, &child, rest, value),
                );
                Value::Object(object)
            }
            Step::Item => {
                let item = sample(self.contract, &schema["items"]);
                json!([self.with_value(&schema["items"], &item, rest, value)])
            }
        }
    }

    fn walk(&self, ours: &Value, theirs: &Value, steps: &mut Vec<Step>, out: &mut Vec<Case>) {
        let ours = resolve(self.served, ours);
        let their_schema = resolve(self.contract, theirs);
        if !steps.is_empty() {
            for (constraint, value) in violations(self.contract, theirs) {
                out.push(Case {
                    field: field_name(steps),
                    constraint,
                    body: self.with_value(self.root, self.base, steps, value),
                });
            }
        }
        if is_array(&ours) {
            steps.push(Step::Item);
            self.walk(&ours["items"], &their_schema["items"], steps, out);
            steps.pop();
            return;
        }
        for (key, child) in ours["properties"].as_object().into_iter().flatten() {
            let Some(their_child) = their_schema["properties"].get(key) else {
                continue;
            };
            steps.push(Step::Key(key.clone()));
            self.walk(child, their_child, steps, out);
            steps.pop();
        }
    }
}

/// How to call one operation with a valid body.
struct Call {
    method: Method,
    path: String,
    token: String,
    base: Value,
}

/// One clinic with an admin, a member, a patient, a migration and an invite: a valid call of
/// every implemented operation that takes a body in the contract, and a valid value of every
/// path parameter.
struct World {
    calls: BTreeMap<&'static str, Call>,
    params: BTreeMap<&'static str, String>,
}

async fn world(api: &TestApi) -> World {
    let admin = user();
    let admin_token = TestApi::token(&admin, false);
    let clinic = api.create_clinic(&admin).await;
    let member = user();
    api.add_clinician(&clinic, &member, "CLINIC_MEMBER").await;
    let patient = user();
    api.add_patient(&clinic, &patient).await;
    let legacy = user();
    api.add_migration(&clinic, &legacy).await;
    let invite = api.send_invite(&clinic, &user()).await;
    // A clinician invite under the same id: the `inviteId` parameter serves both kinds.
    api.invite_clinician(&clinic, &invite).await;
    let tag = api.add_tag(&clinic, "Valid").await;
    let site = api.add_site(&clinic, "Main Street").await;
    // The initial migration needs a clinic not migrated yet.
    let unmigrated = api.create_clinic(&admin).await;
    let clinics = format!("/v1/clinics/{clinic}");
    let params = BTreeMap::from([
        ("clinicId", clinic.clone()),
        ("clinicianId", member.clone()),
        ("patientId", patient.clone()),
        ("userId", legacy.clone()),
        ("inviteId", invite.clone()),
        ("permission", "view".to_owned()),
        ("patientTagId", tag.clone()),
        ("siteId", site.clone()),
        ("shareCode", "ABCD-EFGH-JKLM".to_owned()),
    ]);
    let call = |method: Method, path: String, token: &str, base: Value| Call {
        method,
        path,
        token: token.to_owned(),
        base,
    };
    let calls = BTreeMap::from([
        (
            "AcceptPatientInvitation",
            call(
                Method::PUT,
                format!("{clinics}/invites/patients/{invite}"),
                &admin_token,
                json!({}),
            ),
        ),
        (
            "CreateClinic",
            call(
                Method::POST,
                "/v1/clinics".into(),
                &admin_token,
                json!({ "name": "Valid" }),
            ),
        ),
        (
            "UpdateClinic",
            call(Method::PUT, clinics.clone(), &admin_token, json!({})),
        ),
        (
            "CreateClinician",
            call(
                Method::POST,
                format!("{clinics}/clinicians"),
                &service(),
                json!({ "id": user(), "email": "new@example.org", "roles": ["CLINIC_MEMBER"] }),
            ),
        ),
        (
            "InviteClinician",
            call(
                Method::POST,
                format!("{clinics}/invites/clinicians"),
                &admin_token,
                json!({ "email": "invited@example.org", "roles": ["CLINIC_MEMBER"] }),
            ),
        ),
        (
            "AssociateClinicianToUser",
            call(
                Method::PATCH,
                format!("{clinics}/invites/clinicians/{invite}/clinician"),
                &service(),
                json!({ "userId": user() }),
            ),
        ),
        (
            "UpdateClinician",
            call(
                Method::PUT,
                format!("{clinics}/clinicians/{member}"),
                &admin_token,
                json!({}),
            ),
        ),
        (
            "CreatePatientAccount",
            call(
                Method::POST,
                format!("{clinics}/patients"),
                &admin_token,
                json!({ "fullName": "Valid", "birthDate": "2000-01-01" }),
            ),
        ),
        (
            "CreatePatientFromUser",
            call(
                Method::POST,
                format!("{clinics}/patients/{}", user()),
                &service(),
                json!({ "fullName": "Valid", "birthDate": "2000-01-01", "permissions": { "view": {} } }),
            ),
        ),
        (
            "UpdatePatient",
            call(
                Method::PUT,
                format!("{clinics}/patients/{patient}"),
                &admin_token,
                json!({}),
            ),
        ),
        (
            "UpdatePatientPermissions",
            call(
                Method::PUT,
                format!("{clinics}/patients/{patient}/permissions"),
                &service(),
                json!({ "view": {} }),
            ),
        ),
        (
            "TriggerInitialMigration",
            call(
                Method::POST,
                format!("/v1/clinics/{unmigrated}/migrate"),
                &admin_token,
                json!({}),
            ),
        ),
        (
            "MigrateLegacyClinicianPatients",
            call(
                Method::POST,
                format!("{clinics}/migrations"),
                &service(),
                json!({ "userId": user() }),
            ),
        ),
        (
            "UpdateMigration",
            call(
                Method::PATCH,
                format!("{clinics}/migrations/{legacy}"),
                &service(),
                json!({ "status": "RUNNING" }),
            ),
        ),
        (
            "CreatePatientTag",
            call(
                Method::POST,
                format!("{clinics}/patient_tags"),
                &admin_token,
                json!({ "name": "Another" }),
            ),
        ),
        (
            "UpdatePatientTag",
            call(
                Method::PUT,
                format!("{clinics}/patient_tags/{tag}"),
                &admin_token,
                json!({ "name": "Renamed" }),
            ),
        ),
        (
            "AssignPatientTagToClinicPatients",
            call(
                Method::POST,
                format!("{clinics}/patients/assign_tag/{tag}"),
                &admin_token,
                json!([patient]),
            ),
        ),
        (
            "DeletePatientTagFromClinicPatients",
            call(
                Method::POST,
                format!("{clinics}/patients/delete_tag/{tag}"),
                &admin_token,
                json!([patient]),
            ),
        ),
        (
            "CreateSite",
            call(
                Method::POST,
                format!("{clinics}/sites"),
                &admin_token,
                json!({ "name": "Second Site" }),
            ),
        ),
        (
            "UpdateSite",
            call(
                Method::PUT,
                format!("{clinics}/sites/{site}"),
                &admin_token,
                json!({ "name": "Main St." }),
            ),
        ),
        (
            "UpdateMRNSettings",
            call(
                Method::PUT,
                format!("{clinics}/settings/mrn"),
                &service(),
                json!({ "required": false, "unique": false }),
            ),
        ),
        (
            "UpdatePatientCountSettings",
            call(
                Method::PUT,
                format!("{clinics}/settings/patient_count"),
                &service(),
                json!({ "hardLimit": { "plan": 250 } }),
            ),
        ),
        (
            "UpdateClinicUserDetails",
            call(
                Method::POST,
                format!("/v1/users/{member}/clinics"),
                &service(),
                json!({ "email": "changed@example.org" }),
            ),
        ),
    ]);
    World { calls, params }
}

#[tokio::test]
async fn every_constraint_the_contract_states_for_an_accepted_field_is_refused_naming_the_field() {
    let api = TestApi::spawn().await;
    let (status, served) = api.send(api.request(Method::GET, "/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let contract = Contract::get();
    let calls = world(&api).await.calls;

    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for (path, methods) in served["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            let (Some(ours), Some(theirs)) = (
                request_schema(operation),
                contract.operation(path, method).and_then(request_schema),
            ) else {
                continue;
            };
            let id = operation["operationId"].as_str().expect("operationId");
            let call = calls
                .get(id)
                .unwrap_or_else(|| panic!("{id} takes a body: give it a valid call in `calls`"));
            for case in cases(&served, &contract.spec, ours, theirs, &call.base) {
                let answer = api
                    .call(
                        call.method.clone(),
                        &call.path,
                        Some(&call.token),
                        Some(case.body.clone()),
                    )
                    .await;
                let message = answer.1["message"].as_str().unwrap_or_default();
                if answer.0 != StatusCode::BAD_REQUEST || !message.contains(&case.field) {
                    problems.push(format!(
                        "{id} {} ({}): {} {message:?} for {}",
                        case.field, case.constraint, answer.0, case.body
                    ));
                }
                checked.push(format!("{id} {} {}", case.field, case.constraint));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} refused as they should not be: {problems:#?}",
        problems.len(),
        checked.len()
    );
    // The walk reaches the constrained fields (a broken walk would check nothing and pass).
    for expected in [
        "UpdateClinic timezone enum",
        "UpdateClinic phoneNumbers[0].type minLength",
        "UpdateClinic phoneNumbers uniqueItems",
        "CreateClinician roles[0] enum",
        "UpdatePatient birthDate format \"date\"",
        "UpdatePatient tags[0] pattern ^[a-f0-9]{24}$",
        "UpdateMigration status enum",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not checked: {checked:#?}"
        );
    }
    // Each valid body is accepted, so the 400s above come from the broken field.
    for (id, call) in &calls {
        let answer = api
            .call(
                call.method.clone(),
                &call.path,
                Some(&call.token),
                Some(call.base.clone()),
            )
            .await;
        assert!(answer.0.is_success(), "{id}: {answer:?}");
    }
}

/// The path and query parameters the served document declares, against the contract's: each
/// constraint broken on its own answers 400 naming the parameter.
#[tokio::test]
async fn every_constraint_the_contract_states_for_an_accepted_parameter_is_refused_naming_it() {
    let api = TestApi::spawn().await;
    let (_, served) = api.send(api.request(Method::GET, "/v1/openapi.json")).await;
    let contract = Contract::get();
    let world = world(&api).await;

    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for (template, methods) in served["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            let Some(theirs) = contract.operation(template, method) else {
                continue;
            };
            let id = operation["operationId"].as_str().expect("operationId");
            let method: Method = method.to_uppercase().parse().expect("method");
            let body = world.calls.get(id).map(|c| c.base.clone());
            for ours in operation["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (ours["name"].as_str().unwrap_or_default(), &ours["in"]);
                let shared = &contract.spec["paths"][template];
                let Some(schema) = contract_parameter(&contract.spec, theirs, name)
                    .or_else(|| contract_parameter(&contract.spec, shared, name))
                else {
                    continue;
                };
                for (constraint, value) in violations(&contract.spec, &schema) {
                    let text = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned);
                    if place == "path" && text.is_empty() {
                        continue; // an empty segment matches no route
                    }
                    let path = world.path(template, (place == "path").then_some((name, &text)));
                    let path = if place == "query" {
                        let encoded: String =
                            form_urlencoded::byte_serialize(text.as_bytes()).collect();
                        format!("{path}?{name}={encoded}")
                    } else {
                        path
                    };
                    let answer = api
                        .call(method.clone(), &path, Some(&service()), body.clone())
                        .await;
                    let message = answer.1["message"].as_str().unwrap_or_default();
                    if answer.0 != StatusCode::BAD_REQUEST || !message.contains(name) {
                        problems.push(format!(
                            "{id} {name} ({constraint}) {path}: {} {message:?}",
                            answer.0
                        ));
                    }
                    checked.push(format!("{id} {name} {constraint}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {}: {problems:#?}",
        problems.len(),
        checked.len()
    );
    for expected in [
        "ListPatients limit minimum",
        "ListClinics createdTimeStart format \"date-time\"",
        "GetPatient patientId pattern ^([0-9a-f]{10}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        "DeletePatientPermission permission enum",
        "ListClinicians email format \"email\"",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not checked: {checked:#?}"
        );
    }
}

/// The contract's schema of the parameter `name` of `operation` (or of a path item, whose
/// parameters every operation of the path shares).
fn contract_parameter(contract: &Value, operation: &Value, name: &str) -> Option<Value> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["$ref"].as_str() {
            Some(reference) => {
                let key = reference.rsplit('/').next().unwrap_or_default();
                contract["components"]["parameters"][key].clone()
            }
            None => p.clone(),
        })
        .find(|p| p["name"] == name)
        .map(|p| p["schema"].clone())
}

impl World {
    /// `template` with every parameter a valid value, `broken` (a name and a value) instead of
    /// its own.
    fn path(&self, template: &str, broken: Option<(&str, &String)>) -> String {
        template
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => match broken {
                        Some((wanted, value)) if wanted == name => {
                            form_urlencoded::byte_serialize(value.as_bytes()).collect()
                        }
                        _ => self
                            .params
                            .get(name)
                            .cloned()
                            .unwrap_or_else(|| panic!("no value for {name}")),
                    },
                    None => segment.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/")
    }
}
