//! [`BundleVerifier`]: the client certificate verifier rustls runs in every handshake, over the
//! [`TrustBundles`] of one configuration.
//!
//! It behaves as rustls's `WebPkiClientVerifier` does (it runs one per set of anchors), with
//! two differences: the anchors a chain may end at depend on the chain (a SPIFFE ID picks its
//! trust domain's bundle), and configured intermediates complete the client's chain.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::trust_bundle::TrustBundle;
use crate::tls::bundles::TrustBundles;

/// Verifies client chains against the bundle each one belongs to.
#[derive(Debug)]
pub(crate) struct BundleVerifier {
    bundles: TrustBundles,
    mandatory: bool,
}

impl BundleVerifier {
    /// A verifier over `bundles`; `mandatory`: a handshake without a certificate fails.
    pub(crate) fn new(bundles: TrustBundles, mandatory: bool) -> Self {
        BundleVerifier { bundles, mandatory }
    }

    /// Verifies `chain` (leaf first) now and says which bundle verified it.
    pub(crate) fn verify_chain(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<&TrustBundle, rustls::Error> {
        self.bundles.verify(chain, UnixTime::now())
    }

    /// Which bundle verified `chain`, a chain this verifier accepted moments ago.
    pub(crate) fn bundle_of(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<&TrustBundle, rustls::Error> {
        self.bundles.bundle_of(chain, UnixTime::now())
    }
}

impl ClientCertVerifier for BundleVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.bundles.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.bundles
            .check(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.bundles.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.bundles.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundles.algorithms().supported_schemes()
    }
}
