//! HTTP and gRPC rejection responses.
//!
//! Plain HTTP callers get RFC 9457 problem details (`application/problem+json`) with a short,
//! stable message; gRPC callers (request `content-type: application/grpc*`) get a trailers-only
//! response: HTTP 200, `grpc-status` 16 (UNAUTHENTICATED), 7 (PERMISSION_DENIED) or 3
//! (INVALID_ARGUMENT) and a `grpc-message`. Why a certificate or a request was refused is
//! logged, never sent.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

/// Why the layer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// No verified client identity: 401 / gRPC `UNAUTHENTICATED`.
    Unauthenticated,
    /// The authorizer denied the request: 403 / gRPC `PERMISSION_DENIED`.
    Forbidden,
    /// The request's path has no canonical form (see
    /// [`canonical`](crate::authorize::canonical)) or its method is another spelling of a
    /// standard one (`delete`): 400 / gRPC `INVALID_ARGUMENT`. Decided before the authorizer
    /// runs, so that no policy judges a request the application may read differently.
    BadRequest,
}

impl Rejection {
    /// A stable snake_case name, for metric labels and machine-readable logs:
    /// `unauthenticated`, `forbidden`, `bad_request`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Forbidden => "forbidden",
            Rejection::BadRequest => "bad_request",
        }
    }

    /// The HTTP status for plain HTTP callers.
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::Unauthenticated => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC status code (16, 7 or 3).
    pub fn grpc_code(self) -> u8 {
        match self {
            Rejection::Unauthenticated => 16,
            Rejection::Forbidden => 7,
            Rejection::BadRequest => 3,
        }
    }

    /// The message the client sees.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "a verified client certificate is required",
            Rejection::Forbidden => "the client certificate is not authorized for this request",
            Rejection::BadRequest => "the request path or method is not accepted in this spelling",
        }
    }

    fn problem_json(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => {
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"a verified client certificate is required"}"#
            }
            Rejection::Forbidden => {
                r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"the client certificate is not authorized for this request"}"#
            }
            Rejection::BadRequest => {
                r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"the request path or method is not accepted in this spelling"}"#
            }
        }
    }
}

/// Which kind of rejection to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RejectionFormat {
    /// gRPC for requests whose content type starts with `application/grpc`, HTTP otherwise
    /// (the default).
    #[default]
    Auto,
    /// Always problem-details HTTP.
    Http,
    /// Always gRPC trailers-only.
    Grpc,
}

/// Whether a request is gRPC, by its content type.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Builds the response for a rejection. Implement it to change the bodies or headers.
pub trait Respond<B> {
    /// The response for `rejection` of a request with `request_headers`.
    fn respond(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<B>;
}

/// The built-in responder: problem details or gRPC status, chosen per [`RejectionFormat`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultResponder {
    format: RejectionFormat,
}

impl DefaultResponder {
    /// A responder using `format`.
    pub fn new(format: RejectionFormat) -> Self {
        DefaultResponder { format }
    }
}

impl<B: RejectionBody> Respond<B> for DefaultResponder {
    fn respond(&self, rejection: Rejection, request_headers: &HeaderMap) -> Response<B> {
        let grpc = match self.format {
            RejectionFormat::Auto => is_grpc(request_headers),
            RejectionFormat::Http => false,
            RejectionFormat::Grpc => true,
        };
        if grpc {
            grpc_response(rejection)
        } else {
            http_response(rejection)
        }
    }
}

/// The problem-details response for `rejection`.
pub(crate) fn http_response<B: RejectionBody>(rejection: Rejection) -> Response<B> {
    let mut response = Response::new(B::from_static(rejection.problem_json().as_bytes()));
    *response.status_mut() = rejection.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The gRPC trailers-only response for `rejection`.
pub(crate) fn grpc_response<B: RejectionBody>(rejection: Rejection) -> Response<B> {
    let mut response = Response::new(B::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        "grpc-status",
        HeaderValue::from(u16::from(rejection.grpc_code())),
    );
    // The messages are plain ASCII without '%', so they need no percent-encoding.
    headers.insert(
        "grpc-message",
        HeaderValue::from_static(rejection.message()),
    );
    response
}

/// Response bodies the built-in responder can build: `http_body_util`'s `Full<Bytes>`,
/// `BoxBody` and `UnsyncBoxBody`, `String`, and, with their features, `axum::body::Body` and
/// `tonic::body::Body`. Implement it for your own body type.
pub trait RejectionBody {
    /// A body holding `bytes`.
    fn from_static(bytes: &'static [u8]) -> Self;
    /// An empty body.
    fn empty() -> Self;
}

impl RejectionBody for http_body_util::Full<Bytes> {
    fn from_static(bytes: &'static [u8]) -> Self {
        http_body_util::Full::new(Bytes::from_static(bytes))
    }
    fn empty() -> Self {
        http_body_util::Full::default()
    }
}

impl<E: 'static> RejectionBody for http_body_util::combinators::BoxBody<Bytes, E> {
    fn from_static(bytes: &'static [u8]) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed()
    }
    fn empty() -> Self {
        Self::default()
    }
}

impl<E: 'static> RejectionBody for http_body_util::combinators::UnsyncBoxBody<Bytes, E> {
    fn from_static(bytes: &'static [u8]) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed_unsync()
    }
    fn empty() -> Self {
        Self::default()
    }
}

impl RejectionBody for String {
    fn from_static(bytes: &'static [u8]) -> Self {
        String::from_utf8_lossy(bytes).into_owned()
    }
    fn empty() -> Self {
        String::new()
    }
}
