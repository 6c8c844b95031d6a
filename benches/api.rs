//! Requests per second and latency of the API's two hottest reads, get-patient and
//! list-patients (a clinic of 1,000 patients, first page of 50 by name, with counts), asked by
//! a member of the clinic (so the membership check is part of each request), from one caller
//! and from 16 concurrent callers, next to the reads themselves issued directly with the driver
//! (the ceiling: the patient; the page and the clinic's total, at once). Prints figures;
//! asserts nothing. Needs FerretDB from the local stack.
//!
//! Run: `cargo bench --bench api [-- <seconds per measurement>]` (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::api::{ApiSettings, Application};
use clinic::endpoints::Endpoints;
use futures::TryStreamExt as _;
use mongodb::options::FindOptions;

const PATIENTS: usize = 1_000;
/// The concurrencies measured.
const CALLERS: [usize; 2] = [1, 16];
const SECRET: &str = "bench-secret-bench-secret-bench-secret";

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `request` from each of `CALLERS` concurrent tasks in turn, for `duration` each; each
/// call's latency is recorded.
async fn measure<F, Fut>(duration: Duration, request: F) -> Vec<Figures>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let mut figures = Vec::new();
    for callers in CALLERS {
        figures.push(measure_at(duration, callers, Arc::clone(&request)).await);
    }
    figures
}

async fn measure_at<F, Fut>(duration: Duration, callers: usize, request: Arc<F>) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..callers {
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = worker;
            while started.elapsed() < duration {
                let at = Instant::now();
                request(n).await;
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                n += callers;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        per_second: all.len() as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// The clinic member the requests come from.
const MEMBER: &str = "0123456789";

fn token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3_600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": MEMBER, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let endpoints = Endpoints::from_env().expect("endpoints");
    let database = clinic::testkit::unique("bench-api");
    let mut settings = ApiSettings::default();
    settings.http.listen = "127.0.0.1:0".parse().expect("address");
    settings.http.admin_listen = "127.0.0.1:0".parse().expect("address");
    settings.mongo.uri = endpoints.mongo_uri.clone();
    settings.mongo.database = database.clone();
    settings.auth.hs256_secret = Some(SECRET.into());
    let app = Application::build(&settings)
        .await
        .expect("the API starts (is FerretDB up?)");
    let base = format!("http://{}", app.address());
    tokio::spawn(app.run(std::future::pending()));

    let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo")
        .database(&database);
    let clinic = ObjectId::new();
    let now = DateTime::now();
    db.collection::<Document>("clinics")
        .insert_one(doc! { "_id": clinic, "name": "Bench", "canonicalShareCode": "BNCH-BNCH-BNCH", "shareCodes": ["BNCH-BNCH-BNCH"], "admins": [], "createdTime": now, "updatedTime": now })
        .await
        .expect("clinic");
    db.collection::<Document>("clinicians")
        .insert_one(doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": MEMBER, "email": "member@example.org", "roles": ["CLINIC_MEMBER"], "createdTime": now, "updatedTime": now })
        .await
        .expect("member");
    let users: Vec<String> = (0..PATIENTS).map(|n| format!("{n:010x}")).collect();
    let patients: Vec<Document> = users
        .iter()
        .enumerate()
        .map(|(n, user)| doc! {
            "_id": ObjectId::new(), "clinicId": clinic, "userId": user, "fullName": format!("Patient {:04}", (n * 7919) % PATIENTS),
            "birthDate": "1990-01-01", "email": format!("p{n}@example.org"), "permissions": { "view": {}, "upload": {} },
            "createdTime": now, "updatedTime": now,
        })
        .collect();
    db.collection::<Document>("patients")
        .insert_many(patients)
        .await
        .expect("patients");
    let users = Arc::new(users);
    let client = reqwest::Client::new();
    let token = Arc::new(token());
    println!(
        "api: {PATIENTS} patients in one clinic, a member asking, {CALLERS:?} concurrent callers, {seconds} s per measurement, FerretDB (local stack)"
    );

    let get_api = {
        let (client, base, token, users) = (
            client.clone(),
            base.clone(),
            Arc::clone(&token),
            Arc::clone(&users),
        );
        measure(duration, move |n| {
            let url = format!(
                "{base}/v1/clinics/{}/patients/{}",
                clinic.to_hex(),
                users[n % PATIENTS]
            );
            let (client, token) = (client.clone(), Arc::clone(&token));
            async move {
                let response = client
                    .get(url)
                    .bearer_auth(token.as_str())
                    .send()
                    .await
                    .expect("answer");
                assert!(response.status().is_success());
                response.bytes().await.expect("body");
            }
        })
        .await
    };
    let get_driver = {
        let (patients, users) = (db.collection::<Document>("patients"), Arc::clone(&users));
        measure(duration, move |n| {
            let (patients, user) = (patients.clone(), users[n % PATIENTS].clone());
            async move {
                patients
                    .find_one(doc! { "clinicId": clinic, "userId": user })
                    .await
                    .expect("find")
                    .expect("found");
            }
        })
        .await
    };
    let list_api = {
        let (client, base, token) = (client.clone(), base.clone(), Arc::clone(&token));
        measure(duration, move |_| {
            let url = format!("{base}/v1/clinics/{}/patients?limit=50", clinic.to_hex());
            let (client, token) = (client.clone(), Arc::clone(&token));
            async move {
                let response = client
                    .get(url)
                    .bearer_auth(token.as_str())
                    .send()
                    .await
                    .expect("answer");
                assert!(response.status().is_success());
                response.bytes().await.expect("body");
            }
        })
        .await
    };
    let list_driver = {
        let patients = db.collection::<Document>("patients");
        measure(duration, move |_| {
            let patients = patients.clone();
            async move {
                let options = FindOptions::builder()
                    .sort(doc! { "fullName": 1, "_id": 1 })
                    .limit(50)
                    .build();
                let page = async {
                    let found = patients
                        .find(doc! { "clinicId": clinic })
                        .with_options(options)
                        .await?;
                    found.try_collect::<Vec<Document>>().await
                };
                let total = patients
                    .count_documents(doc! { "clinicId": clinic })
                    .into_future();
                let (page, _) = tokio::try_join!(page, total).expect("read");
                assert_eq!(page.len(), 50);
            }
        })
        .await
    };
    for (name, api, driver) in [
        ("get-patient", get_api, get_driver),
        ("list-patients (50 of 1,000)", list_api, list_driver),
    ] {
        for ((callers, api), driver) in CALLERS.iter().zip(&api).zip(&driver) {
            println!(
                "  {name:<28} {callers:>2} caller(s)  API {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms | driver {:>7.0} q/s  p50 {:>6.2} ms  p99 {:>6.2} ms | API/driver {:>3.0}%",
                api.per_second,
                api.p50_ms,
                api.p99_ms,
                driver.per_second,
                driver.p50_ms,
                driver.p99_ms,
                100.0 * api.per_second / driver.per_second
            );
        }
    }
    db.drop().await.expect("clean up");
}
