//! Who is calling: a bearer JWT (`Authorization: Bearer …`, or Tidepool's
//! `x-tidepool-session-token` header), verified with the configured HS256 secret or RS256 public
//! key. `sub` is the user id; the service claim marks a backend service.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use super::settings::AuthSettings;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject: a user id, or a service's name.
    pub user_id: String,
    /// Whether the token is a backend service's.
    pub service: bool,
    /// The `email` claim, when the token carries one (used for the clinician record of a user
    /// who creates a clinic).
    pub email: Option<String>,
    /// The `name` claim, likewise.
    pub name: Option<String>,
}

/// Verifies tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    service_claim: String,
}

impl Verifier {
    /// A verifier for the settings (validated before).
    ///
    /// # Errors
    /// An unreadable RS256 key, or no key at all.
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&settings.hs256_secret, &settings.rs256_public_key_pem) {
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(pem)) => (
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| anyhow::anyhow!("auth.rs256_public_key_pem: {e}"))?,
                Algorithm::RS256,
            ),
            _ => anyhow::bail!("auth: exactly one of hs256_secret and rs256_public_key_pem"),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token that is not valid yet is refused (jsonwebtoken checks `nbf` only when asked).
        validation.validate_nbf = true;
        match &settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            key,
            validation,
            service_claim: settings.service_claim.clone(),
        })
    }

    /// The caller a token names.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for a bad signature, an expired token or a missing `sub`.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let user_id = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the token has no subject".into()))?
            .to_owned();
        let service = match claims.get(&self.service_claim) {
            Some(Value::Bool(flag)) => *flag,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("yes") || text == "true",
            _ => false,
        };
        let text = |claim: &str| {
            claims
                .get(claim)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Caller {
            user_id,
            service,
            email: text("email"),
            name: text("name"),
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let token = header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .or_else(|| header("x-tidepool-session-token"))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "no token: send Authorization: Bearer <jwt> or x-tidepool-session-token".into(),
                )
            })?;
        state.verifier.verify(token)
    }
}
