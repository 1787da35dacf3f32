//! The crypto provider: the one place that knows which rustls backend the features chose.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

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

/// The provider's session ticketer (`Ticketer::new()`: a 6-hour rotator around one fresh key,
/// AES-256-CBC with HMAC-SHA256 for aws-lc-rs, ChaCha20-Poly1305 for ring).
pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    {
        rustls::crypto::aws_lc_rs::Ticketer::new()
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        rustls::crypto::ring::Ticketer::new()
    }
}
