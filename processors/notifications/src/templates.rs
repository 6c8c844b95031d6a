//! The emails' templates: per template a subject, a plain-text part and an HTML part
//! (`templates/<name>.subject.txt`, `.txt`, `.html`, built into the binary), rendered with
//! `minijinja` (HTML-escaped in the HTML part, strict about undefined variables). The names and
//! variables are Tidepool mailer's; `ProductName`, `WebURL` and `AssetURL` come from settings.

use std::collections::BTreeMap;

use clinic::email::{CLINIC_MIGRATION_COMPLETE, MIGRATE_PATIENT};
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::config::Notifications;
use crate::smtp::Email;

/// A clinic was created: to its first admin.
pub const CLINIC_CREATED: &str = "clinic_created";
/// A clinic invited an address to join as a clinician: to that address.
pub const CLINICIAN_INVITATION: &str = "clinician_invitation";
/// A clinician's roles changed: to that clinician.
pub const CLINICIAN_PERMISSIONS_UPDATED: &str = "clinician_permissions_updated";
/// A clinic created a custodial account with an address: to that patient.
pub const CUSTODIAL_ACCOUNT_CREATED: &str = "custodial_account_created";
/// A patient invited a clinic: to each of its admins.
pub const PATIENT_CLINIC_INVITATION: &str = "patient_clinic_invitation";
/// A clinic asked a patient to upload: to that patient.
pub const PATIENT_UPLOAD_REMINDER: &str = "patient_upload_reminder";

/// Every template with the variables it needs (besides the settings' three).
pub const CATALOGUE: [(&str, &[&str]); 8] = [
    (CLINIC_CREATED, &["ClinicName"]),
    (
        CLINICIAN_INVITATION,
        &["ClinicName", "ClinicId", "InviteId"],
    ),
    (
        CLINICIAN_PERMISSIONS_UPDATED,
        &["ClinicName", "ClinicianName"],
    ),
    (
        CUSTODIAL_ACCOUNT_CREATED,
        &["ClinicName", "PatientName", "ClinicId", "UserId"],
    ),
    (PATIENT_CLINIC_INVITATION, &["ClinicName", "PatientName"]),
    (PATIENT_UPLOAD_REMINDER, &["ClinicName"]),
    (MIGRATE_PATIENT, &["ClinicName", "LegacyClinicianName"]),
    (CLINIC_MIGRATION_COMPLETE, &["ClinicName"]),
];

/// The variables `template` needs; `None` for a template that does not exist.
pub fn variables_of(template: &str) -> Option<&'static [&'static str]> {
    CATALOGUE
        .iter()
        .find(|(name, _)| *name == template)
        .map(|(_, variables)| *variables)
}

/// Why a request cannot become an email. Messages name templates and variables, never a
/// variable's value (values are personal data, and messages reach logs and the DLQ).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No template has this name.
    #[error("unknown template {0:?}")]
    Unknown(String),
    /// The request lacks a variable the template needs.
    #[error("template {template} needs the variable {variable}")]
    Missing {
        /// The template.
        template: String,
        /// The variable.
        variable: &'static str,
    },
    /// The template engine failed on a part.
    #[error("rendering {part}: {message}")]
    Render {
        /// The part's template (`<template>.html`, …).
        part: String,
        /// What the engine said.
        message: String,
    },
}

/// Whether a request can become an email as it stands.
///
/// # Errors
/// An unknown template, or a variable it needs that the request lacks.
pub fn check(template: &str, variables: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    let needed =
        variables_of(template).ok_or_else(|| TemplateError::Unknown(template.to_owned()))?;
    match needed.iter().find(|v| !variables.contains_key(**v)) {
        Some(missing) => Err(TemplateError::Missing {
            template: template.to_owned(),
            variable: missing,
        }),
        None => Ok(()),
    }
}

/// Example variables for every template, for `render` without `--vars`.
pub fn sample_variables(template: &str) -> BTreeMap<String, String> {
    let sample = |name: &str| match name {
        "ClinicName" => "Riverside Diabetes Clinic",
        "ClinicianName" => "Dr. Ana Ortiz",
        "PatientName" => "Sam Lee",
        "LegacyClinicianName" => "Dr. Lou Ward",
        "ClinicId" => "65a1b2c3d4e5f60718293a4b",
        "UserId" => "a1b2c3d4e5",
        "InviteId" => "0f8e7d6c5b4a39281706f5e4d3c2b1a0",
        _ => "…",
    };
    variables_of(template)
        .unwrap_or_default()
        .iter()
        .map(|name| ((*name).to_owned(), sample(name).to_owned()))
        .collect()
}

macro_rules! parts {
    ($($name:literal),* $(,)?) => {
        [$(
            (concat!($name, ".subject.txt"), include_str!(concat!("../templates/", $name, ".subject.txt"))),
            (concat!($name, ".txt"), include_str!(concat!("../templates/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../templates/", $name, ".html"))),
        )*]
    };
}

/// Every template file, by name.
const FILES: [(&str, &str); 24] = parts![
    "clinic_created",
    "clinician_invitation",
    "clinician_permissions_updated",
    "custodial_account_created",
    "patient_clinic_invitation",
    "patient_upload_reminder",
    "migrate_patient",
    "clinic_migration_complete",
];

/// The compiled templates and the settings' variables.
pub struct Templates {
    env: Environment<'static>,
    globals: BTreeMap<String, Value>,
}

impl Templates {
    /// Every template, compiled.
    ///
    /// # Panics
    /// When a built-in template does not compile (a test renders them all).
    pub fn new(settings: &Notifications) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template("layout.html", include_str!("../templates/layout.html"))
            .expect("BUG: the layout compiles");
        for (name, source) in FILES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("BUG: template {name}: {e}"));
        }
        // The URLs come from settings, not from documents: marked safe, so the HTML part keeps
        // them as written (the escaper would turn every `/` into `&#x2f;`).
        let url = |u: &str| Value::from_safe_string(u.trim_end_matches('/').to_owned());
        let globals = BTreeMap::from([
            (
                "ProductName".to_owned(),
                Value::from(settings.product_name.clone()),
            ),
            ("WebURL".to_owned(), url(&settings.web_url)),
            ("AssetURL".to_owned(), url(&settings.asset_url)),
        ]);
        Self { env, globals }
    }

    /// The email `template` makes for `to` with `variables` (which win over the settings').
    ///
    /// # Errors
    /// An unknown template or a missing variable (a message without the variables' values).
    pub fn render(
        &self,
        template: &str,
        to: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<Email, TemplateError> {
        check(template, variables)?;
        let mut context = self.globals.clone();
        context.extend(
            variables
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone()))),
        );
        let part = |suffix: &str| {
            let name = format!("{template}{suffix}");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&context))
                .map_err(|e| TemplateError::Render {
                    part: name,
                    message: e.to_string(),
                })
        };
        Ok(Email {
            to: to.to_owned(),
            // One line: a stray newline in a variable must not fold the header.
            subject: part(".subject.txt")?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            text: part(".txt")?,
            html: part(".html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_with_its_variables_and_escapes_html() {
        let templates = Templates::new(&Notifications::default());
        for (name, _) in CATALOGUE {
            let mut variables = sample_variables(name);
            let email = templates
                .render(name, "someone@example.org", &variables)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !email.subject.is_empty() && !email.subject.contains('\n'),
                "{name}"
            );
            assert!(email.text.contains("Riverside Diabetes Clinic"), "{name}");
            assert!(email.html.contains("Riverside Diabetes Clinic"), "{name}");
            assert!(email.html.contains("https://app.tidepool.org"), "{name}");
            variables.insert("ClinicName".into(), "<b>R&D</b>".into());
            let email = templates
                .render(name, "someone@example.org", &variables)
                .expect("renders");
            assert!(
                email.html.contains("&lt;b&gt;R&amp;D"),
                "{name}: {}",
                email.html
            );
            assert!(
                !email.html.contains("<b>R"),
                "{name}: a variable's markup is escaped"
            );
            assert!(
                email.text.contains("<b>R&D</b>"),
                "{name}: plain text is not escaped"
            );
        }
    }

    #[test]
    fn unknown_templates_and_missing_variables_are_refused() {
        let templates = Templates::new(&Notifications::default());
        let none = BTreeMap::new();
        assert!(
            templates
                .render("nope", "a@b.org", &none)
                .is_err_and(|e| e == TemplateError::Unknown("nope".into()))
        );
        assert!(
            templates
                .render(CLINIC_CREATED, "a@b.org", &none)
                .is_err_and(|e| e.to_string().contains("ClinicName"))
        );
    }
}
