//! `clinic scenario`: the demo's story through the whole suite on the local stack, once the
//! topics, schemas and sink connectors are applied and the four processors and the CDC emulator
//! (`clinic cdc emulate`, the source connector's stand-in: FerretDB has no change streams) run
//! (`scripts/demo` does all that). The story only writes through the API and into the databases
//! Tidepool's other services own (gatekeeper's `perms`, seagull's profiles), and publishes the
//! identity service's `users:delete`; every change event comes from the emulator, as it would
//! from the connector. Each step waits for its effects and prints PASS or FAIL with its time:
//!
//! 1. a user creates a clinic (→ `clinic_created` to them; their membership in gatekeeper);
//! 2. the admin invites two clinicians (→ `clinician_invitation` to each); one accepts (the
//!    service that confirms invites associates her account) and the admin promotes her
//!    (→ `clinician_permissions_updated`); the other invite stays pending;
//! 3. the new admin creates a custodial patient with an address (→ `custodial_account_created`;
//!    the grant in gatekeeper);
//! 4. a patient invites the clinic by its share code (→ `patient_clinic_invitation` to both
//!    admins) and the clinic accepts (→ the patient and the grant);
//! 5. an upload reminder (→ `patient_upload_reminder`);
//! 6. a legacy clinician with 50 patients sharing directly (seeded in `gatekeeper.perms` and
//!    seagull's profiles) creates a clinic and migrates (→ 50 `migrate_patient`,
//!    `clinic_migration_complete`; the patients in the clinic, the shares gone);
//! 7. the inviting patient deletes their account (`users:delete` → archived, removed, the grant
//!    gone).
//!
//! The story calls the API through the typed client (`clinic-client`, generated from the
//! contract), except hydrophone's patient-invite route, which the contract does not have.
//! Then a summary of what the story left (`summary`). The API is the one at `CLINIC_API_URL`
//! (signing tokens with `CLINIC_API_SECRET`) when set, as `scripts/demo` runs it; otherwise one
//! started in-process.

mod client;
mod summary;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bson::oid::ObjectId;
use bson::{Document, doc};
use serde_json::json;

use crate::api::{ApiSettings, Application};
use crate::endpoints::Endpoints;
use client::{Api, address, all, await_mail, delete_user, user_id, wait_for};
use clinic_client::types;

/// Patients of the legacy clinician in step 6.
const LEGACY_PATIENTS: usize = 50;

/// What the steps learn and the summary shows.
struct Story {
    api: Api,
    endpoints: Endpoints,
    clinic_db: mongodb::Database,
    gatekeeper: mongodb::Database,
    seagull: mongodb::Database,
    /// The run's suffix: in both clinics' names, so every subject of the run carries it.
    suffix: String,
    name: String,
    clinic_id: String,
    clinic: ObjectId,
    share_code: String,
    admin: String,
    member: String,
    custodial: String,
    patient: String,
    legacy_clinic: Option<ObjectId>,
}

/// Runs the story, printing each step; stops at the first that does not come true.
///
/// # Errors
/// A service that does not answer, or an expected state that does not arrive in time.
pub async fn run(endpoints: &Endpoints) -> anyhow::Result<()> {
    let api = match (
        std::env::var("CLINIC_API_URL"),
        std::env::var("CLINIC_API_SECRET"),
    ) {
        (Ok(base), Ok(secret)) => Api::new(base.trim_end_matches('/').to_owned(), secret),
        _ => in_process_api(endpoints).await?,
    };
    let mongo = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .context("MongoDB")?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let mut story = Story {
        api,
        endpoints: endpoints.clone(),
        clinic_db: mongo.database("clinic"),
        gatekeeper: mongo.database("gatekeeper"),
        seagull: mongo.database("seagull"),
        name: format!("Demo Clinic {suffix}"),
        suffix,
        clinic_id: String::new(),
        clinic: ObjectId::new(),
        share_code: String::new(),
        admin: user_id(),
        member: user_id(),
        custodial: String::new(),
        patient: user_id(),
        legacy_clinic: None,
    };
    step(1, "a clinic is created", story.clinic_created()).await?;
    step(2, "clinicians join, one is promoted", story.clinicians()).await?;
    step(3, "a custodial patient", story.custodial_patient()).await?;
    step(
        4,
        "a patient invites the clinic",
        story.patient_invitation(),
    )
    .await?;
    step(5, "an upload reminder", story.upload_reminder()).await?;
    step(6, "a legacy clinician migrates", story.migration()).await?;
    step(7, "a user deletes their account", story.user_deleted()).await?;
    summary::print(&story).await
}

/// `user` creates a provider practice named `name` in `city` (the typed client's CreateClinic).
async fn create_clinic(
    api: &Api,
    user: &str,
    name: &str,
    city: &str,
) -> anyhow::Result<types::ClinicV1> {
    Ok(api
        .typed(user, false)?
        .create_clinic(&types::ClinicV1Request {
            name: Some(name.parse()?),
            city: Some(city.parse()?),
            clinic_type: Some(types::ClinicV1RequestClinicType::ProviderPractice),
            ..Default::default()
        })
        .await
        .context("CreateClinic")?
        .into_inner())
}

/// A one-hour token for `user`, signed with `CLINIC_API_SECRET`, as the story's own tokens are.
///
/// # Errors
/// `CLINIC_API_SECRET` unset, or a token that does not sign.
pub fn token(user: &str) -> anyhow::Result<String> {
    let secret = std::env::var("CLINIC_API_SECRET").context("CLINIC_API_SECRET is not set")?;
    Api::new(String::new(), secret).token(user, false, Duration::from_secs(3600))
}

async fn in_process_api(endpoints: &Endpoints) -> anyhow::Result<Api> {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = ApiSettings::default();
    settings.http.listen = "127.0.0.1:0".parse().context("address")?;
    settings.http.admin_listen = "127.0.0.1:0".parse().context("address")?;
    settings.mongo.uri = endpoints.mongo_uri.clone();
    settings.auth.hs256_secret = Some(secret.clone().into());
    let app = Application::build(&settings)
        .await
        .context("starting the API")?;
    let base = format!("http://{}", app.address());
    tokio::spawn(app.run(std::future::pending()));
    Ok(Api::new(base, secret))
}

/// Runs one step: PASS with what it saw and its time, or FAIL with why.
async fn step(
    number: usize,
    title: &str,
    work: impl Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    match work.await {
        Ok(seen) => {
            println!(
                "PASS  {number}. {title}: {seen} ({:.2} s)",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(error) => {
            println!(
                "FAIL  {number}. {title}: {error:#} ({:.2} s)",
                started.elapsed().as_secs_f64()
            );
            Err(error.context(format!("step {number}, {title}")))
        }
    }
}

impl Story {
    async fn clinic_created(&mut self) -> anyhow::Result<String> {
        let clinic = create_clinic(&self.api, &self.admin, &self.name, "Palo Alto").await?;
        self.clinic_id = clinic.id.to_string();
        self.clinic = ObjectId::parse_str(&self.clinic_id).context("clinic id")?;
        self.share_code = clinic.share_code.to_string();
        let subject = format!("Your clinic {} is ready on Tidepool", self.name);
        let mail = await_mail(&self.endpoints, &subject, 1).await?;
        anyhow::ensure!(mail[0].to[0].address == address(&self.admin));
        wait_for(
            &self.gatekeeper,
            "clinician_permissions",
            doc! { "clinicId": self.clinic },
            1,
        )
        .await
        .context("the admin's membership in gatekeeper")?;
        Ok(format!(
            "{} ({}); clinic_created to its admin; their membership in gatekeeper",
            self.clinic_id, self.share_code
        ))
    }

    /// The admin invites two addresses (→ `clinician_invitation` to each); one accepts (the
    /// service that confirms invites associates her account, as hydrophone does) and is
    /// promoted (→ `clinician_permissions_updated`); the other invite stays pending.
    async fn clinicians(&mut self) -> anyhow::Result<String> {
        let as_admin = self.api.typed(&self.admin, false)?;
        let mut invites = Vec::new();
        for to in [
            address(&self.member),
            format!("invited-{}@example.org", self.suffix),
        ] {
            let invited = as_admin
                .invite_clinician(
                    &self.clinic_id.parse()?,
                    &types::InviteClinicianV1Request {
                        email: Some(to.parse()?),
                        roles: Some(types::ClinicianRolesV1(vec![
                            types::ClinicianRolesV1Item::ClinicMember,
                        ])),
                    },
                )
                .await
                .context("InviteClinician")?
                .into_inner();
            let invite = invited.invite_id.context("inviteId")?;
            invites.push((to, invite));
        }
        // The invitations arrive before anyone accepts: an acceptance between two of the
        // emulator's polls would make the insert and the acceptance one change event.
        let subject = format!("You are invited to join {} on Tidepool", self.name);
        let mail = await_mail(&self.endpoints, &subject, 2).await?;
        for (to, invite) in &invites {
            let email = mail
                .iter()
                .find(|m| &m.to[0].address == to)
                .with_context(|| format!("no invitation for {to}"))?;
            anyhow::ensure!(
                email.text.contains(&format!("inviteId={invite}")),
                "the invitation does not carry its invite: {}",
                email.text
            );
        }
        self.api
            .typed("demo-service", true)?
            .associate_clinician_to_user(
                &self.clinic_id.parse()?,
                &invites[0].1.parse()?,
                &types::AssociateClinicianToUserV1Request {
                    user_id: Some(self.member.clone()),
                },
            )
            .await
            .context("AssociateClinicianToUser")?;
        // The member's record is in gatekeeper before the promotion, for the same reason.
        wait_for(
            &self.gatekeeper,
            "clinician_permissions",
            doc! { "clinicId": self.clinic, "userId": &self.member },
            1,
        )
        .await
        .context("the new member in gatekeeper")?;
        as_admin
            .update_clinician(
                &self.clinic_id.parse()?,
                &self.member.parse()?,
                &types::ClinicianV1Request {
                    name: Some("Dr. Ana Ortiz".parse()?),
                    roles: Some(types::ClinicianRolesV1(vec![
                        types::ClinicianRolesV1Item::ClinicAdmin,
                    ])),
                    ..Default::default()
                },
            )
            .await
            .context("UpdateClinician")?;
        let subject = format!("Your permissions at {} have changed", self.name);
        let mail = await_mail(&self.endpoints, &subject, 1).await?;
        anyhow::ensure!(mail[0].to[0].address == address(&self.member));
        anyhow::ensure!(
            mail[0]
                .text
                .contains(&format!("User {} changed your permissions", self.admin)),
            "the updater's name is not in the email: {}",
            mail[0].text
        );
        let members = wait_for(
            &self.gatekeeper,
            "clinician_permissions",
            doc! { "clinicId": self.clinic, "roles": "CLINIC_ADMIN" },
            2,
        )
        .await
        .context("two admins in gatekeeper")?;
        Ok(format!(
            "two invited (clinician_invitation to each); Dr. Ana Ortiz accepted and was promoted (clinician_permissions_updated), one invite pending; {} admins in gatekeeper",
            members.len()
        ))
    }

    async fn custodial_patient(&mut self) -> anyhow::Result<String> {
        let casey = format!("casey-{}@example.org", self.suffix);
        let patient = self
            .api
            .typed(&self.member, false)?
            .create_patient_account(
                &self.clinic_id.parse()?,
                &types::PatientV1Request {
                    full_name: Some("Casey Kid".parse()?),
                    birth_date: Some("2015-06-07".parse()?),
                    email: Some(casey.parse()?),
                    ..Default::default()
                },
            )
            .await
            .context("CreatePatientAccount")?
            .into_inner();
        self.custodial = patient.id.to_string();
        let subject = format!("{} created a Tidepool account for you", self.name);
        let mail = await_mail(&self.endpoints, &subject, 1).await?;
        anyhow::ensure!(mail[0].to[0].address == casey);
        wait_for(
            &self.gatekeeper,
            "patient_permissions",
            doc! { "clinicId": self.clinic, "userId": &self.custodial },
            1,
        )
        .await
        .context("Casey's grant in gatekeeper")?;
        Ok(
            "Casey Kid (custodial_account_created to casey); the clinic's grant in gatekeeper"
                .into(),
        )
    }

    async fn patient_invitation(&mut self) -> anyhow::Result<String> {
        let invite = self
            .api
            .call(
                reqwest::Method::POST,
                &format!("/confirm/send/invite/{}/clinic", self.patient),
                &self.patient,
                false,
                Some(json!({ "shareCode": self.share_code, "permissions": { "view": {}, "upload": {} }, "fullName": "Pat Doe", "birthDate": "1990-04-05" })),
            )
            .await?;
        let key = invite["key"].as_str().context("invite key")?.to_owned();
        let subject = format!("Pat Doe invited {} to see their data", self.name);
        let mail = await_mail(&self.endpoints, &subject, 2).await?;
        let mut to: Vec<&str> = mail.iter().map(|m| m.to[0].address.as_str()).collect();
        to.sort_unstable();
        let mut admins = vec![address(&self.admin), address(&self.member)];
        admins.sort();
        anyhow::ensure!(to == admins, "invitations to {to:?}, expected {admins:?}");
        self.api
            .typed(&self.admin, false)?
            .accept_patient_invitation(&self.clinic_id.parse()?, &key.parse()?, &Default::default())
            .await
            .context("AcceptPatientInvitation")?;
        wait_for(
            &self.gatekeeper,
            "patient_permissions",
            doc! { "clinicId": self.clinic, "userId": &self.patient },
            1,
        )
        .await
        .context("Pat's grant in gatekeeper")?;
        Ok("Pat Doe by share code (patient_clinic_invitation to both admins); accepted, the grant in gatekeeper".into())
    }

    async fn upload_reminder(&mut self) -> anyhow::Result<String> {
        self.api
            .typed(&self.admin, false)?
            .send_upload_reminder(&self.clinic_id.parse()?, &self.custodial.parse()?)
            .await
            .context("SendUploadReminder")?;
        let subject = format!("{} asks you to upload your data", self.name);
        await_mail(&self.endpoints, &subject, 1).await?;
        Ok("patient_upload_reminder to Casey".into())
    }

    async fn migration(&mut self) -> anyhow::Result<String> {
        let legacy = user_id();
        let patients: Vec<String> = (0..LEGACY_PATIENTS).map(|_| user_id()).collect();
        // What Tidepool's gatekeeper and seagull hold for them.
        let mut perms = vec![doc! {
            "_id": ObjectId::new(), "sharerId": &legacy, "userId": &legacy, "permissions": { "root": {} },
        }];
        let mut profiles = vec![doc! {
            "_id": ObjectId::new(), "userId": &legacy,
            "value": json!({ "fullName": "Dr. Lou Ward", "email": address(&legacy) }).to_string(),
        }];
        for (i, user) in patients.iter().enumerate() {
            perms.push(doc! {
                "_id": ObjectId::new(), "sharerId": user, "userId": &legacy,
                "permissions": { "view": {}, "upload": {} },
            });
            profiles.push(doc! {
                "_id": ObjectId::new(), "userId": user,
                "value": json!({ "fullName": format!("Legacy Patient {i}"), "email": address(user),
                                 "patient": { "birthday": "1985-02-03" } }).to_string(),
            });
        }
        self.gatekeeper
            .collection::<Document>("perms")
            .insert_many(&perms)
            .await
            .context("seeding gatekeeper.perms")?;
        self.seagull
            .collection::<Document>("seagull")
            .insert_many(&profiles)
            .await
            .context("seeding seagull.seagull")?;
        let name = format!("Legacy Practice {}", self.suffix);
        let clinic = create_clinic(&self.api, &legacy, &name, "Boston").await?;
        let clinic_id = clinic.id.to_string();
        let clinic_oid = ObjectId::parse_str(&clinic_id).context("clinic id")?;
        self.legacy_clinic = Some(clinic_oid);
        // The emulator must have published the shares and profiles before the trigger, as the
        // connector would have long before: the migration acts on what its tables hold.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.api
            .typed(&legacy, false)?
            .trigger_initial_migration(&clinic_id, &Default::default())
            .await
            .context("TriggerInitialMigration")?;
        wait_for(
            &self.clinic_db,
            "migrations",
            doc! { "clinicId": clinic_oid, "status": "COMPLETED" },
            1,
        )
        .await
        .context("the migration COMPLETED (is clinic-migrations running?)")?;
        wait_for(
            &self.clinic_db,
            "patients",
            doc! { "clinicId": clinic_oid, "isMigrated": true, "legacyClinicianIds": &legacy },
            LEGACY_PATIENTS,
        )
        .await
        .context("the migrated patients in clinic.patients")?;
        wait_for(&self.gatekeeper, "perms", doc! { "userId": &legacy }, 1)
            .await
            .context("the legacy shares gone from gatekeeper.perms")?;
        await_mail(
            &self.endpoints,
            &format!("Your data is now shared with {name}"),
            LEGACY_PATIENTS,
        )
        .await?;
        await_mail(
            &self.endpoints,
            &format!("{name} is ready: your patients have moved"),
            1,
        )
        .await?;
        await_mail(
            &self.endpoints,
            &format!("Your clinic {name} is ready on Tidepool"),
            1,
        )
        .await?;
        let granted = wait_for(
            &self.gatekeeper,
            "patient_permissions",
            doc! { "clinicId": clinic_oid },
            LEGACY_PATIENTS,
        )
        .await
        .context("the migrated patients' grants in gatekeeper")?;
        Ok(format!(
            "{LEGACY_PATIENTS} patients moved into {name}, the shares removed, COMPLETED; {} grants in gatekeeper; {LEGACY_PATIENTS} migrate_patient, clinic_migration_complete, clinic_created",
            granted.len()
        ))
    }

    async fn user_deleted(&mut self) -> anyhow::Result<String> {
        let record = all(
            &self.clinic_db,
            "patients",
            doc! { "clinicId": self.clinic, "userId": &self.patient },
        )
        .await?
        .into_iter()
        .next()
        .context("Pat's patient record")?;
        let id = record.get_object_id("_id").context("_id")?;
        delete_user(&self.endpoints, &self.patient).await?;
        wait_for(&self.clinic_db, "patient_deletions", doc! { "_id": id }, 1)
            .await
            .context("Pat's archive in clinic.patient_deletions (is clinic-deletions running?)")?;
        wait_for(&self.clinic_db, "patients", doc! { "_id": id }, 0)
            .await
            .context("Pat's record gone from clinic.patients")?;
        wait_for(
            &self.gatekeeper,
            "patient_permissions",
            doc! { "clinicId": self.clinic, "userId": &self.patient },
            0,
        )
        .await
        .context("Pat's grant gone from gatekeeper")?;
        Ok("users:delete: Pat archived into clinic.patient_deletions, removed from clinic.patients and from gatekeeper".into())
    }
}
