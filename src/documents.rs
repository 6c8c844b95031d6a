//! Readers of the Tidepool clinic documents' fields that more than one processor (or the API's
//! answers) reads, so each field is read one way everywhere. The shapes are Tidepool's clinic
//! service's (clinicians and patients are keyed by `clinicId` + `userId`; invites have no `userId`
//! yet); the team's notes on that service are outside this repository (`../shared/reference`).

use bson::{Bson, Document};

/// The document's user id; `None` when it has none (an invite not accepted yet, a patient
/// created without an account) or it is empty.
pub fn user_id(document: &Document) -> Option<String> {
    match document.get("userId") {
        Some(Bson::String(user)) if !user.is_empty() => Some(user.clone()),
        _ => None,
    }
}

/// A string field, owned; `None` when it is missing or not a string.
pub fn text(document: &Document, field: &str) -> Option<String> {
    document.get_str(field).ok().map(str::to_owned)
}

/// Whether a patient document is custodial: its `permissions` grant `custodian` (the clinic
/// holds the account).
pub fn is_custodial(patient: &Document) -> bool {
    patient
        .get_document("permissions")
        .is_ok_and(|p| p.contains_key("custodian"))
}

/// The clinician role whose holders are the clinic's `admins`.
pub const CLINIC_ADMIN: &str = "CLINIC_ADMIN";

/// Whether a clinician document holds the admin role.
pub fn is_admin(clinician: &Document) -> bool {
    clinician
        .get_array("roles")
        .is_ok_and(|r| r.iter().any(|x| x.as_str() == Some(CLINIC_ADMIN)))
}

/// Permission names as the documents store them: `{view: {}, upload: {}, …}` (in the order
/// given), as patients' `permissions` and gatekeeper's rows and shares hold them.
pub fn permission_set<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Document {
    names
        .into_iter()
        .map(|name| (name.into(), Bson::Document(Document::new())))
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn user_ids_are_non_empty_strings_and_custodial_means_a_custodian_grant() {
        assert_eq!(user_id(&doc! { "userId": "u1" }), Some("u1".into()));
        assert_eq!(user_id(&doc! { "userId": "" }), None);
        assert_eq!(user_id(&doc! { "userId": 5 }), None);
        assert_eq!(user_id(&doc! {}), None);
        assert!(is_custodial(
            &doc! { "permissions": { "custodian": {}, "view": {} } }
        ));
        assert!(!is_custodial(&doc! { "permissions": { "view": {} } }));
        assert!(!is_custodial(&doc! { "permissions": "custodian" }));
    }
}
