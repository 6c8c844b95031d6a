//! The email requests a processor sends the notifications processor on
//! `notifications.requests` (Avro, [`SCHEMA`], keyed by the request's id): what to send to whom,
//! not how. The template names are Tidepool mailer's.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use apache_avro::types::Value as Avro;

use crate::streams::{OutValue, OutputRecord};

/// The topic of email requests between processors.
pub const REQUESTS_TOPIC: &str = "notifications.requests";

/// The Avro schema of a request (`notifications.requests-value`).
pub const SCHEMA: &str = include_str!("email_request.avsc");

/// [`SCHEMA`] shared by every request record, not copied into each.
static SHARED_SCHEMA: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(SCHEMA));

/// Tidepool's template: a patient was moved into a clinic by a migration.
pub const MIGRATE_PATIENT: &str = "migrate_patient";
/// Tidepool's template: a legacy clinician's migration is complete.
pub const CLINIC_MIGRATION_COMPLETE: &str = "clinic_migration_complete";

/// One email to send once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRequest {
    /// Deterministic (the triggering record's identity, the template and the recipient): the
    /// notifications processor sends each id at most once.
    pub id: String,
    /// The template name.
    pub template: String,
    /// The address, when the requester knows it.
    pub recipient_email: Option<String>,
    /// The user, for an address the notifications processor looks up.
    pub recipient_user_id: Option<String>,
    /// Template variables (`ClinicName`, …).
    pub variables: BTreeMap<String, String>,
    /// When the triggering change happened, epoch milliseconds.
    pub requested_ms: i64,
}

fn optional(value: Option<&String>) -> Avro {
    match value {
        None => Avro::Union(0, Box::new(Avro::Null)),
        Some(text) => Avro::Union(1, Box::new(Avro::String(text.clone()))),
    }
}

/// A record of `notifications.requests` that is no email request (its message names the field,
/// and the value's Avro type; processors dead-letter it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotARequest(String);

impl EmailRequest {
    /// The request as an Avro value of [`SCHEMA`].
    pub fn to_avro(&self) -> Avro {
        Avro::Record(vec![
            ("id".into(), Avro::String(self.id.clone())),
            ("template".into(), Avro::String(self.template.clone())),
            (
                "recipientEmail".into(),
                optional(self.recipient_email.as_ref()),
            ),
            (
                "recipientUserId".into(),
                optional(self.recipient_user_id.as_ref()),
            ),
            (
                "variables".into(),
                Avro::Map(
                    self.variables
                        .iter()
                        .map(|(k, v)| (k.clone(), Avro::String(v.clone())))
                        .collect(),
                ),
            ),
            (
                "requestedTime".into(),
                Avro::TimestampMillis(self.requested_ms),
            ),
        ])
    }

    /// The record asking for this email on [`REQUESTS_TOPIC`], keyed by its id.
    pub fn record(&self) -> OutputRecord {
        OutputRecord {
            topic: REQUESTS_TOPIC.to_owned(),
            key: self.id.clone(),
            value: Some(OutValue::Avro {
                schema: Arc::clone(&SHARED_SCHEMA),
                value: self.to_avro(),
            }),
        }
    }

    /// Reads a request decoded with any schema compatible with [`SCHEMA`].
    ///
    /// # Errors
    /// [`NotARequest`], naming what is missing or mistyped.
    pub fn from_avro(value: &Avro) -> Result<Self, NotARequest> {
        let Avro::Record(fields) = value else {
            return Err(NotARequest("an email request is not a record".into()));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| match v {
                    Avro::Union(_, inner) => inner.as_ref(),
                    other => other,
                })
                .ok_or_else(|| NotARequest(format!("email request without {name}")))
        };
        let text = |name: &str| -> Result<Option<String>, NotARequest> {
            match field(name)? {
                Avro::Null => Ok(None),
                Avro::String(s) => Ok(Some(s.clone())),
                other => Err(NotARequest(format!(
                    "email request {name}: a string expected, {other:?}"
                ))),
            }
        };
        let required = |name: &str| {
            text(name)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| NotARequest(format!("email request without {name}")))
        };
        let Avro::Map(variables) = field("variables")? else {
            return Err(NotARequest(
                "email request variables: a map expected".into(),
            ));
        };
        let variables = variables
            .iter()
            .map(|(k, v)| match v {
                Avro::String(s) => Ok((k.clone(), s.clone())),
                other => Err(NotARequest(format!(
                    "email request variable {k}: {other:?}"
                ))),
            })
            .collect::<Result<_, NotARequest>>()?;
        let requested_ms = match field("requestedTime")? {
            Avro::TimestampMillis(ms) | Avro::Long(ms) => *ms,
            other => {
                return Err(NotARequest(format!(
                    "email request requestedTime: {other:?}"
                )));
            }
        };
        Ok(Self {
            id: required("id")?,
            template: required("template")?,
            recipient_email: text("recipientEmail")?.filter(|s| !s.is_empty()),
            recipient_user_id: text("recipientUserId")?.filter(|s| !s.is_empty()),
            variables,
            requested_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> EmailRequest {
        EmailRequest {
            id: "migration:1:migrate_patient:u1".into(),
            template: MIGRATE_PATIENT.into(),
            recipient_email: Some("p@example.org".into()),
            recipient_user_id: Some("u1".into()),
            variables: BTreeMap::from([("ClinicName".into(), "Dr Who's".into())]),
            requested_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_request_encodes_with_its_schema_and_reads_back() {
        let through = |request: &EmailRequest| {
            crate::cdc::avro_json::through_avro_binary(SCHEMA, request.to_avro())
        };
        assert_eq!(EmailRequest::from_avro(&through(&request())), Ok(request()));
        let anonymous = EmailRequest {
            recipient_email: None,
            ..request()
        };
        assert_eq!(EmailRequest::from_avro(&through(&anonymous)), Ok(anonymous));
    }

    #[test]
    fn a_request_without_an_id_is_refused() {
        let Avro::Record(mut fields) = request().to_avro() else {
            unreachable!()
        };
        fields.retain(|(n, _)| n != "id");
        assert_eq!(
            EmailRequest::from_avro(&Avro::Record(fields)),
            Err(NotARequest("email request without id".into()))
        );
    }
}
