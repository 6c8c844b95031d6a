//! `mrnSettings.v1`, `patientCountSettings.v1` (with `patientCountLimit.v1`) and
//! `patientCount.v1`, both ways, and how they are stored on the clinic.

use std::collections::BTreeMap;

use bson::{Bson, DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::ApiResult;
use crate::api::time;
use crate::api::validate::bad;

/// `mrnSettings.v1`, stored as the clinic's `mrnSettings`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MrnSettings {
    /// Patients must have an MRN when created or updated.
    pub required: bool,
    /// No two patients of the clinic share an MRN.
    pub unique: bool,
}

impl MrnSettings {
    /// The clinic's (both off when it has none).
    pub fn of(clinic: &Document) -> Self {
        let settings = clinic.get_document("mrnSettings").ok();
        let flag = |name: &str| settings.is_some_and(|s| s.get_bool(name) == Ok(true));
        Self {
            required: flag("required"),
            unique: flag("unique"),
        }
    }

    /// As stored.
    pub fn to_document(self) -> Document {
        doc! { "required": self.required, "unique": self.unique }
    }
}

/// `patientCountLimit.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientCountLimit {
    /// The most patients counted towards the plan.
    pub plan: i64,
    /// When the limit starts to apply (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// When it stops applying (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
}

/// `patientCountSettings.v1`, stored as the clinic's `patientCountSettings` (dates as dates).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatientCountSettings {
    /// No patient is created past it (402).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<PatientCountLimit>,
    /// Informative: patients may still be created past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<PatientCountLimit>,
}

/// The hard limit Tidepool gives a new clinic.
pub const NEW_CLINIC_HARD_LIMIT: i64 = 250;

impl PatientCountLimit {
    fn to_document(&self, field: &str) -> ApiResult<Document> {
        if self.plan < 0 {
            return Err(bad(&format!("{field}.plan"), "must be at least 0"));
        }
        let mut stored = doc! { "plan": self.plan };
        for (name, value) in [("startDate", &self.start_date), ("endDate", &self.end_date)] {
            if let Some(text) = value {
                let at = time::parse(text).ok_or_else(|| {
                    bad(&format!("{field}.{name}"), "must be an RFC 3339 date-time")
                })?;
                stored.insert(name, at);
            }
        }
        Ok(stored)
    }

    fn of(stored: &Document) -> Option<Self> {
        let plan = match stored.get("plan")? {
            Bson::Int32(n) => i64::from(*n),
            Bson::Int64(n) => *n,
            _ => return None,
        };
        let date = |name: &str| {
            stored
                .get_datetime(name)
                .ok()
                .map(|at| time::text(Some(at)))
        };
        Some(Self {
            plan,
            start_date: date("startDate"),
            end_date: date("endDate"),
        })
    }

    /// Whether the limit applies at `now` (its dates, when set, around it).
    pub fn applies_at(&self, now: DateTime) -> bool {
        let after = |text: &Option<String>| text.as_deref().and_then(time::parse);
        after(&self.start_date).is_none_or(|start| start <= now)
            && after(&self.end_date).is_none_or(|end| now < end)
    }
}

impl PatientCountSettings {
    /// The clinic's (none set: no limits).
    pub fn of(clinic: &Document) -> Self {
        let stored = clinic.get_document("patientCountSettings").ok();
        let limit = |name: &str| {
            stored
                .and_then(|s| s.get_document(name).ok())
                .and_then(PatientCountLimit::of)
        };
        Self {
            hard_limit: limit("hardLimit"),
            soft_limit: limit("softLimit"),
        }
    }

    /// As stored, validated.
    ///
    /// # Errors
    /// 400 naming the field.
    pub fn to_document(&self) -> ApiResult<Document> {
        let mut stored = Document::new();
        if let Some(limit) = &self.hard_limit {
            stored.insert("hardLimit", limit.to_document("hardLimit")?);
        }
        if let Some(limit) = &self.soft_limit {
            stored.insert("softLimit", limit.to_document("softLimit")?);
        }
        Ok(stored)
    }

    /// A new clinic's: Tidepool's hard limit of 250.
    pub fn new_clinic() -> Document {
        doc! { "hardLimit": { "plan": NEW_CLINIC_HARD_LIMIT } }
    }
}

/// `patientProviderCount.v1`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ProviderCount {
    /// Patients with a data source of the provider.
    pub total: u64,
    /// Those by the data source's state.
    pub states: BTreeMap<String, u64>,
}

/// `patientCount.v1`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PatientCount {
    /// Every patient of the clinic.
    pub total: u64,
    /// Demo patients (this service creates none).
    pub demo: u64,
    /// Patients counted towards the plan's limit: all but twiist's (a patient with a twiist
    /// data source) and demo ones, as Tidepool counts them.
    pub plan: u64,
    /// Patients by data-source provider.
    pub providers: BTreeMap<String, ProviderCount>,
}
