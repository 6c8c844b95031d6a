//! What the processor projects out of patient and clinician documents: gatekeeper's rows,
//! defined in the platform ([`clinic::gatekeeper`]) because `clinic reconcile permissions`
//! computes them from the collections through the same code.

pub use clinic::gatekeeper::{Membership, PatientGrant};
