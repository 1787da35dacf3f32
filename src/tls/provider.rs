//! The crypto provider: the one place that knows which rustls backend the features chose.

use rustls::crypto::CryptoProvider;

/// The crypto provider this crate builds every rustls object with: aws-lc-rs when its feature
/// is on, else ring. The process-wide default provider is never consulted, so enabling both
/// features (or another crate installing a default) cannot make rustls panic.
pub fn crypto_provider() -> CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    {
        rustls::crypto::aws_lc_rs::default_provider()
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        rustls::crypto::ring::default_provider()
    }
}
