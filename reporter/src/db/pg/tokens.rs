//! Enrollment and read tokens, revocation.
