//! `clinic.v1` both ways: [`ClinicInput`] (the writable fields, validated into the `$set` of
//! the stored document) and [`Clinic`] (a stored clinic as answered).

use std::collections::HashSet;
use std::sync::LazyLock;

use bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::ApiResult;
use crate::api::time;
use crate::api::validate::{bad, non_empty, one_of, unique, web_uri};
use crate::documents::text;

/// The writable fields of `clinic.v1` (read-only ones a client echoes back are ignored).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicInput {
    name: Option<String>,
    address: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    website: Option<String>,
    clinic_type: Option<String>,
    clinic_size: Option<String>,
    phone_numbers: Option<Vec<PhoneNumber>>,
    preferred_bg_units: Option<String>,
    timezone: Option<String>,
    suppressed_notifications: Option<SuppressedNotifications>,
}

/// One of a clinic's phone numbers (other keys are ignored, as `phoneNumber.v1` allows them).
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
pub struct PhoneNumber {
    /// What kind of number (free text, as the contract).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    number: String,
}

/// Which notifications the clinic does not want.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuppressedNotifications {
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_clinic_invitation: Option<bool>,
}

/// A clinic as `clinic.v1` answers it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clinic {
    id: String,
    /// Empty for a clinic made for a legacy clinician (EnableNewClinicExperience) until its
    /// admin names it, as Tidepool answers it.
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    website: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clinic_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clinic_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    share_code: String,
    tier: String,
    tier_description: String,
    preferred_bg_units: String,
    can_migrate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_numbers: Option<Vec<PhoneNumber>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed_notifications: Option<SuppressedNotifications>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_tags: Option<Vec<Named>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sites: Option<Vec<Named>>,
    created_time: String,
    updated_time: String,
}

/// A patient tag or a site of the clinic.
#[derive(Debug, Serialize, ToSchema)]
pub struct Named {
    id: String,
    name: String,
}

const CLINIC_TYPES: [&str; 5] = [
    "provider_practice",
    "healthcare_system",
    "veterinary_clinic",
    "other",
    "researcher",
];
const CLINIC_SIZES: [&str; 4] = ["0-249", "250-499", "500-999", "1000+"];
const BG_UNITS: [&str; 2] = ["mg/dL", "mmol/L"];

/// The time zone names the contract allows (`clinicTimezone.v1`): a stored name outside them
/// would break every later read of the clinic against the contract. A zone database crate would
/// accept names the contract lacks, so the list is the contract's own.
pub static TIMEZONES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../timezones.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .collect()
});

impl ClinicInput {
    /// The fields to `$set`, validated; only what the client sent.
    ///
    /// # Errors
    /// 400 naming the first field that breaks the contract.
    pub fn to_set(&self) -> ApiResult<Document> {
        let mut set = Document::new();
        let texts = [
            ("name", &self.name),
            ("address", &self.address),
            ("city", &self.city),
            ("state", &self.state),
            ("postalCode", &self.postal_code),
            ("country", &self.country),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                set.insert(field, non_empty(field, value)?);
            }
        }
        if let Some(website) = &self.website {
            set.insert("website", web_uri("website", website)?);
        }
        let enums: [(&str, &str, &Option<String>, &[&str]); 3] = [
            ("clinicType", "clinicType", &self.clinic_type, &CLINIC_TYPES),
            ("clinicSize", "clinicSize", &self.clinic_size, &CLINIC_SIZES),
            // The reference service stores this one capitalised (DESIGN.md 2.1 keeps shapes).
            (
                "preferredBgUnits",
                "PreferredBgUnits",
                &self.preferred_bg_units,
                &BG_UNITS,
            ),
        ];
        for (field, stored, value, allowed) in enums {
            if let Some(value) = value {
                set.insert(stored, one_of(field, value, allowed)?);
            }
        }
        if let Some(numbers) = &self.phone_numbers {
            if numbers.is_empty() {
                return Err(bad("phoneNumbers", "must hold at least one number"));
            }
            unique("phoneNumbers", numbers)?;
            let mut stored = Vec::new();
            for (i, number) in numbers.iter().enumerate() {
                let mut entry = doc! {
                    "number": non_empty(&format!("phoneNumbers[{i}].number"), &number.number)?,
                };
                if let Some(kind) = &number.kind {
                    entry.insert("type", non_empty(&format!("phoneNumbers[{i}].type"), kind)?);
                }
                stored.push(Bson::Document(entry));
            }
            set.insert("phoneNumbers", stored);
        }
        if let Some(zone) = &self.timezone {
            if !TIMEZONES.contains(zone.as_str()) {
                return Err(bad(
                    "timezone",
                    "must be one of the contract's IANA time zone names (clinicTimezone.v1)",
                ));
            }
            set.insert("timezone", zone);
        }
        if let Some(suppressed) = &self.suppressed_notifications {
            let mut stored = Document::new();
            if let Some(flag) = suppressed.patient_clinic_invitation {
                stored.insert("patientClinicInvitation", flag);
            }
            set.insert("suppressedNotifications", stored);
        }
        Ok(set)
    }
}

fn tier_description(tier: &str) -> &'static str {
    match tier {
        "tier0200" => "Standard",
        "tier0300" => "Premium",
        "tier0400" => "Enterprise",
        _ => "Free",
    }
}

impl From<&Document> for Clinic {
    fn from(clinic: &Document) -> Self {
        let tier = clinic
            .get_str("tier")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or("tier0100");
        let admins = clinic.get_array("admins").map(Vec::len).unwrap_or(0);
        let migrated = clinic.get_bool("isMigrated").unwrap_or(false);
        let named = |field: &str, id_field: &str| {
            clinic.get_array(field).ok().map(|items| {
                items
                    .iter()
                    .filter_map(Bson::as_document)
                    .map(|t| Named {
                        id: t
                            .get_object_id(id_field)
                            .map(|o| o.to_hex())
                            .unwrap_or_default(),
                        name: t.get_str("name").unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
        };
        Self {
            id: clinic
                .get_object_id("_id")
                .map(|o| o.to_hex())
                .unwrap_or_default(),
            name: text(clinic, "name").unwrap_or_default(),
            address: text(clinic, "address"),
            city: text(clinic, "city"),
            state: text(clinic, "state"),
            postal_code: text(clinic, "postalCode"),
            country: text(clinic, "country"),
            website: text(clinic, "website"),
            clinic_type: text(clinic, "clinicType"),
            clinic_size: text(clinic, "clinicSize"),
            timezone: text(clinic, "timezone"),
            share_code: text(clinic, "canonicalShareCode").unwrap_or_default(),
            tier: tier.to_owned(),
            tier_description: tier_description(tier).to_owned(),
            preferred_bg_units: text(clinic, "PreferredBgUnits")
                .unwrap_or_else(|| "mg/dL".to_owned()),
            can_migrate: !migrated && admins > 0 && clinic.get_str("name").is_ok(),
            phone_numbers: clinic.get_array("phoneNumbers").ok().map(|numbers| {
                numbers
                    .iter()
                    .filter_map(Bson::as_document)
                    .map(|n| PhoneNumber {
                        kind: text(n, "type"),
                        number: text(n, "number").unwrap_or_default(),
                    })
                    .collect()
            }),
            suppressed_notifications: clinic.get_document("suppressedNotifications").ok().map(
                |s| SuppressedNotifications {
                    patient_clinic_invitation: s.get_bool("patientClinicInvitation").ok(),
                },
            ),
            patient_tags: named("patientTags", "_id"),
            sites: named("sites", "id"),
            created_time: time::text(clinic.get_datetime("createdTime").ok()),
            updated_time: time::text(clinic.get_datetime("updatedTime").ok()),
        }
    }
}
