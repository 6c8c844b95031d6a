//! The OpenAPI document of what this server implements, generated from the handlers'
//! `#[utoipa::path]` annotations (collected with the router, [`super::operations`]) and served at
//! `/v1/openapi.json`. Paths, methods, operation ids, parameters and status codes are the
//! contract's (`tests/integration/api/openapi.rs` checks them against `clinic.v1.yaml`); each
//! body names its contract schema in its description.
//! Two operations are not in the contract: the patient's invitation of a clinic (hydrophone's
//! path) and the clinic declining one.

use utoipa::Modify;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::ErrorBody;

/// The generated document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Clinics API (clinic)",
        description = "The operations of Tidepool's clinic.v1 contract this service implements."
    ),
    components(responses(ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The contract's `sessionToken` scheme (the `x-tidepool-session-token` header); a bearer
/// token is accepted as well.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "sessionToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-tidepool-session-token"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
