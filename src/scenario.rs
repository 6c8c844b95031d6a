//! `clinic scenario`: the demo's story through the whole suite on the local stack, once the
//! topics, schemas and sink connectors are applied and the four processors and the CDC emulator
//! (`clinic cdc emulate`, the source connector's stand-in: FerretDB has no change streams) run
//! (`scripts/demo` does all that). The story only writes through the API and into the databases
//! (and publishes the identity service's `users:delete`); every change event comes from the
//! emulator, as it would from the connector.
//!
//! 1. The API (in-process, database `clinic`): a user creates a clinic, a service adds a member
//!    and shares two patients, the member creates a custodial patient.
//! 2. Their change events reach `permissions`, and the gatekeeper collections come to hold
//!    exactly the clinic's grants and memberships.
//! 3. A patient's account is deleted (a `users:delete` CloudEvent): `deletions` archives their
//!    record into `clinic.patient_deletions` and the sink removes it from `clinic.patients`;
//!    that delete's change event then removes the grant from gatekeeper.
//! 4. A legacy clinician, with whom three patients shared their data through gatekeeper's
//!    `perms`, creates a clinic and triggers its migration through the API: `migrations` moves
//!    the three into the clinic (`clinic.patients`, names from their seagull profiles), removes
//!    the legacy shares from `gatekeeper.perms` and marks the migration COMPLETED.
//! 5. `notifications` mails the story's seven emails into Mailpit: `clinic_created` to both
//!    clinics' admins, `custodial_account_created` to Casey, `migrate_patient` to the three
//!    migrated patients and `clinic_migration_complete` to the legacy clinician.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bson::{Document, doc};
use futures::TryStreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::api::{ApiSettings, Application};
use crate::endpoints::Endpoints;

const WAIT: Duration = Duration::from_secs(90);

/// Runs the story, printing each step; an error names the step that did not come true.
///
/// # Errors
/// A service that does not answer, or an expected state that does not arrive in time.
pub async fn run(endpoints: &Endpoints) -> anyhow::Result<()> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = ApiSettings::default();
    settings.http.listen = "127.0.0.1:0".parse().context("address")?;
    settings.http.admin_listen = "127.0.0.1:0".parse().context("address")?;
    settings.mongo.uri = endpoints.mongo_uri.clone();
    settings.auth.hs256_secret = Some(secret.clone().into());
    let app = Application::build(&settings)
        .await
        .context("starting the API")?;
    let api = Api {
        base: format!("http://{}", app.address()),
        client: reqwest::Client::new(),
        secret,
    };
    tokio::spawn(app.run(std::future::pending()));
    let mongo = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .context("MongoDB")?;
    let clinic_db = mongo.database("clinic");
    let gatekeeper = mongo.database("gatekeeper");

    // 1. Through the API.
    let started = Instant::now();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let admin = user_id();
    let clinic = api
        .call(reqwest::Method::POST, "/v1/clinics", &admin, false, Some(json!({ "name": format!("Demo Clinic {suffix}"), "city": "Palo Alto", "clinicType": "provider_practice" })))
        .await?;
    let clinic_id = clinic["id"].as_str().context("clinic id")?.to_owned();
    let member = user_id();
    api.call(reqwest::Method::POST, &format!("/v1/clinics/{clinic_id}/clinicians"), "demo-service", true, Some(json!({ "id": member, "email": format!("member-{suffix}@example.org"), "name": "Dr. Member", "roles": ["CLINIC_MEMBER"] })))
        .await?;
    let (alice, bob) = (user_id(), user_id());
    for (patient, name, grants) in [
        (&alice, "Alice Doe", json!({ "view": {}, "upload": {} })),
        (&bob, "Bob Roe", json!({ "view": {} })),
    ] {
        api.call(
            reqwest::Method::POST,
            &format!("/v1/clinics/{clinic_id}/patients/{patient}"),
            "demo-service",
            true,
            Some(json!({ "permissions": grants, "fullName": name, "birthDate": "1990-04-05" })),
        )
        .await?;
    }
    let custodial = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/clinics/{clinic_id}/patients"),
            &member,
            false,
            Some(json!({ "fullName": "Casey Kid", "birthDate": "2015-06-07", "email": format!("casey-{suffix}@example.org") })),
        )
        .await?;
    let casey = custodial["id"].as_str().context("custodial id")?.to_owned();
    println!(
        "PASS  API: clinic {clinic_id} ({}) with an admin and a member; patients Alice, Bob and custodial Casey ({:.2} s)",
        clinic["shareCode"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );

    // 2. The emulator publishes the writes' change events; permissions and the gatekeeper sinks.
    let started = Instant::now();
    let clinic_oid = bson::oid::ObjectId::parse_str(&clinic_id).context("clinic id")?;
    let patients = all(&clinic_db, "patients", doc! { "clinicId": clinic_oid }).await?;
    let grants = wait_for(
        &gatekeeper,
        "patient_permissions",
        doc! { "clinicId": clinic_oid },
        3,
    )
    .await
    .context("the gatekeeper patient_permissions of the clinic (are clinic-permissions and clinic cdc emulate running?)")?;
    let members = wait_for(
        &gatekeeper,
        "clinician_permissions",
        doc! { "clinicId": clinic_oid },
        2,
    )
    .await
    .context("the gatekeeper clinician_permissions of the clinic")?;
    let mut users: Vec<String> = grants
        .iter()
        .filter_map(|g| g.get_str("userId").ok().map(str::to_owned))
        .collect();
    users.sort();
    let mut expected = vec![alice.clone(), bob.clone(), casey.clone()];
    expected.sort();
    anyhow::ensure!(
        users == expected,
        "gatekeeper holds grants of {users:?}, expected {expected:?}"
    );
    println!(
        "PASS  CDC → permissions → sinks: gatekeeper has {} patient grants and {} memberships of the clinic ({:.2} s)",
        grants.len(),
        members.len(),
        started.elapsed().as_secs_f64()
    );

    // 3. Alice deletes her account.
    let started = Instant::now();
    let alice_doc = patients
        .iter()
        .find(|p| p.get_str("userId") == Ok(alice.as_str()))
        .context("Alice's record")?
        .clone();
    let alice_id = alice_doc.get_object_id("_id").context("Alice's _id")?;
    delete_user(endpoints, &alice).await?;
    wait_for(&clinic_db, "patient_deletions", doc! { "_id": alice_id }, 1)
        .await
        .context("Alice's archive in clinic.patient_deletions (is clinic-deletions running?)")?;
    wait_for(&clinic_db, "patients", doc! { "_id": alice_id }, 0)
        .await
        .context("Alice's record gone from clinic.patients")?;
    wait_for(
        &gatekeeper,
        "patient_permissions",
        doc! { "_id": alice_id },
        0,
    )
    .await
    .context("Alice's grant gone from gatekeeper")?;
    let left = wait_for(
        &gatekeeper,
        "patient_permissions",
        doc! { "clinicId": clinic_oid },
        2,
    )
    .await?;
    println!(
        "PASS  users:delete → deletions → sinks: Alice archived and removed; gatekeeper keeps {} grants of the clinic ({:.2} s)",
        left.len(),
        started.elapsed().as_secs_f64()
    );

    migrate(&api, &mongo, suffix).await?;
    emails(endpoints, suffix).await
}

/// Step 5, the emails of the story, from the notifications processor through Mailpit: every
/// subject names its clinic, and both clinics' names carry the run's suffix.
async fn emails(endpoints: &Endpoints, suffix: &str) -> anyhow::Result<()> {
    const EXPECTED: usize = 7;
    let started = Instant::now();
    let deadline = started + WAIT;
    let received = loop {
        let received =
            crate::smoke::mail::messages(&endpoints.mailpit_url, &format!("subject:{suffix}"), 100)
                .await?;
        if received.len() >= EXPECTED {
            break received;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of the story's {EXPECTED} emails in Mailpit after {WAIT:?} (is clinic-notifications running?)",
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut subjects: Vec<String> = received
        .iter()
        .map(|m| m.subject.replace(suffix, "…"))
        .collect();
    subjects.sort();
    subjects.dedup();
    anyhow::ensure!(
        received.len() == EXPECTED && subjects.len() == 5,
        "expected {EXPECTED} emails with 5 subjects, found {}: {subjects:?}",
        received.len()
    );
    println!(
        "PASS  clinics, custodial patient, migration → notifications → Mailpit: {EXPECTED} emails (clinic_created ×2, custodial_account_created, migrate_patient ×3, clinic_migration_complete) ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// 4. A legacy clinician's clinic and its migration.
async fn migrate(api: &Api, mongo: &mongodb::Client, suffix: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let legacy = user_id();
    let patients: Vec<(String, &str)> = ["Dana Poe", "Eli Fox", "Fay Lin"]
        .into_iter()
        .map(|name| (user_id(), name))
        .collect();
    // What Tidepool's gatekeeper and seagull hold for them.
    let mut perms = vec![doc! {
        "_id": bson::oid::ObjectId::new(), "sharerId": &legacy, "userId": &legacy, "permissions": { "root": {} },
    }];
    let mut profiles = vec![doc! {
        "_id": bson::oid::ObjectId::new(), "userId": &legacy,
        "value": json!({ "fullName": "Dr. Legacy", "email": format!("legacy-{suffix}@example.org") }).to_string(),
    }];
    for (user, name) in &patients {
        perms.push(doc! {
            "_id": bson::oid::ObjectId::new(), "sharerId": user, "userId": &legacy,
            "permissions": { "view": {}, "upload": {} },
        });
        profiles.push(doc! {
            "_id": bson::oid::ObjectId::new(), "userId": user,
            "value": json!({ "fullName": name, "email": format!("{user}@example.org"),
                             "patient": { "birthday": "1985-02-03" } }).to_string(),
        });
    }
    let gatekeeper = mongo.database("gatekeeper");
    gatekeeper
        .collection::<Document>("perms")
        .insert_many(&perms)
        .await
        .context("seeding gatekeeper.perms")?;
    mongo
        .database("seagull")
        .collection::<Document>("seagull")
        .insert_many(&profiles)
        .await
        .context("seeding seagull.seagull")?;
    let clinic = api
        .call(reqwest::Method::POST, "/v1/clinics", &legacy, false, Some(json!({ "name": format!("Legacy Practice {suffix}"), "city": "Boston", "clinicType": "provider_practice" })))
        .await?;
    let clinic_id = clinic["id"].as_str().context("clinic id")?.to_owned();
    api.call(
        reqwest::Method::POST,
        &format!("/v1/clinics/{clinic_id}/migrate"),
        &legacy,
        false,
        Some(json!({})),
    )
    .await?;
    let clinic_oid = bson::oid::ObjectId::parse_str(&clinic_id).context("clinic id")?;
    let clinic_db = mongo.database("clinic");
    let migrations = all(&clinic_db, "migrations", doc! { "clinicId": clinic_oid }).await?;
    anyhow::ensure!(migrations.len() == 1, "the API wrote no migration");
    let id = migrations[0]
        .get_object_id("_id")
        .context("migration _id")?;
    wait_for(
        &clinic_db,
        "migrations",
        doc! { "_id": id, "status": "COMPLETED" },
        1,
    )
    .await
    .context("the migration COMPLETED (is clinic-migrations running?)")?;
    let moved = wait_for(
        &clinic_db,
        "patients",
        doc! { "clinicId": clinic_oid, "isMigrated": true, "legacyClinicianIds": &legacy },
        3,
    )
    .await
    .context("the three migrated patients in clinic.patients")?;
    wait_for(&gatekeeper, "perms", doc! { "userId": &legacy }, 1)
        .await
        .context("the legacy shares gone from gatekeeper.perms")?;
    let mut names: Vec<&str> = moved
        .iter()
        .filter_map(|p| p.get_str("fullName").ok())
        .collect();
    names.sort_unstable();
    println!(
        "PASS  migration → migrations → sinks: {} moved into the clinic, the legacy shares removed, status COMPLETED ({:.2} s)",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Api {
    base: String,
    client: reqwest::Client,
    secret: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        service: bool,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 600;
        let mut claims = json!({ "sub": user, "exp": exp, "email": format!("{user}@example.org"), "name": format!("User {user}") });
        if service {
            claims["svr"] = json!("yes");
        }
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?;
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

/// A Tidepool-shaped user id (10 hex characters).
fn user_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

async fn all(
    db: &mongodb::Database,
    name: &str,
    filter: Document,
) -> anyhow::Result<Vec<Document>> {
    Ok(db
        .collection::<Document>(name)
        .find(filter)
        .await?
        .try_collect()
        .await?)
}

/// Waits until `filter` matches exactly `count` documents; returns them.
async fn wait_for(
    db: &mongodb::Database,
    name: &str,
    filter: Document,
    count: usize,
) -> anyhow::Result<Vec<Document>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = all(db, name, filter.clone()).await?;
        if found.len() == count {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}.{name}: {} documents match {filter} after {WAIT:?}, expected {count}",
            db.name(),
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A binary-mode `users:delete` CloudEvent, as the identity service publishes it.
async fn delete_user(endpoints: &Endpoints, user: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .create()?;
    let time = bson::DateTime::now().try_to_rfc3339_string()?;
    let id = uuid::Uuid::new_v4().to_string();
    let headers = [
        ("ce_specversion", "1.0"),
        ("ce_type", "users:delete"),
        ("ce_id", id.as_str()),
        ("ce_source", "demo"),
        ("ce_time", time.as_str()),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    });
    let data = json!({ "userid": user, "username": format!("{user}@example.org") }).to_string();
    producer
        .send(
            FutureRecord::to("user.events")
                .key(user)
                .payload(&data)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .context("publishing the users:delete CloudEvent")?;
    Ok(())
}
