//! How a sign-in fails: a code the app gets in `?authError=`, and the cause, logged.

/// Why a sign-in failed, as sent to the app in `?authError=`.
#[derive(Debug)]
pub(crate) struct SignInFailure {
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

impl SignInFailure {
    pub(crate) fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

pub(crate) fn internal(error: impl std::fmt::Display) -> SignInFailure {
    SignInFailure::new("server_error", error.to_string())
}
