//! Differential tests of `authorize::canonical`: whenever `canonicalize` accepts a request
//! path, the application resolves the path as sent and the canonical path to the same thing —
//! the same bytes from tower-http's `ServeDir`, the same route and parameters from an axum
//! `Router` — and the file `ServeDir` serves is the one the canonical path names. The
//! settings that fail these properties are pinned by the `diverges_*` tests, which keep the
//! module docs honest about when each setting is unsafe.

mod common;

use std::path::Path as FsPath;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use common::site;
use http::{Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_mtls::authorize::PathPattern;
use tower_mtls::authorize::canonical::{
    DotSegments, EncodedUnreserved, EscapedSlashesAction, MergeSlashes, PathNormalization,
    PathParameters, canonicalize, canonicalize_pattern,
};

/// Hostile pieces, concatenated freely.
const PIECES: &[&str] = &[
    "/", "//", "static", "private", "public", "rivate", "x", "admin", "api", "nested", "files",
    "%70", "%61dmin", "%2F", "%2f", "%5C", "%5c", "\\", ".", "..", "%2e", "%2E%2e", ";", "%3B",
    "%3b", "%00", "%0A", "%C3%A9", "%c3%a9", "é", "%FF", "%C3", "~", "%7E", "%7e", "%41", "%",
    "%4", "%zz", "%25", "%252e", "@", "%40", "*", "%20", "-", "\"", "{}",
];

/// Spellings of whole segments, joined with `/` under a prefix that reaches a route.
const SEGMENTS: &[&str] = &[
    "static",
    "st%61tic",
    "private",
    "%70rivate",
    "priv%61te",
    "p%72ivate",
    "public",
    "x",
    "%78",
    "admin",
    "%61dmin",
    "api",
    "nested",
    "files",
    "",
    ".",
    "..",
    "%2e",
    ".%2E",
    "%2E%2e",
    "...",
    "x%2Fy",
    "private%2fx",
    "private%5Cx",
    "a\\b",
    "a;b",
    "x;",
    "a%3Bb",
    "%00",
    "%0A",
    "%C3%A9",
    "%c3%a9",
    "é",
    "%FF",
    "%C3",
    "~",
    "%7E",
    "%7e",
    "%41",
    "%",
    "%4",
    "%zz",
    "%25",
    "%252e",
    "@me",
    "%40me",
    "*",
    "a%20b",
    "1",
];

/// Segments that reach the files and routes, spelled in every way: drawn more often.
const REACHING: &[&str] = &[
    "x",
    "%78",
    "private",
    "%70rivate",
    "priv%61te",
    "public",
    "p%75blic",
    "static",
    "admin",
    "%61dmin",
    "",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "private%2Fx",
    "private%5cx",
];

/// Prefixes of the axum app's routes (`/files` is ServeDir under `nest_service`).
const ROUTES: &[&str] = &[
    "",
    "/static",
    "/static/private",
    "/files",
    "/files/private",
    "/nested",
    "/api",
];

/// Prefixes of ServeDir's files.
const FILES: &[&str] = &["", "/private", "/public", "/%70rivate", "/private/x"];

fn request_paths(prefixes: &'static [&'static str]) -> impl Strategy<Value = String> {
    let free = prop::collection::vec(prop::sample::select(PIECES), 1..8)
        .prop_map(|pieces| format!("/{}", pieces.concat()));
    let segment = prop_oneof![
        2 => prop::sample::select(REACHING),
        1 => prop::sample::select(SEGMENTS),
    ];
    let structured = (
        prop::sample::select(prefixes),
        prop::collection::vec(segment, 1..4),
        any::<bool>(),
    )
        .prop_map(|(prefix, segments, trailing)| {
            let mut path = format!("{prefix}/{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            path
        });
    prop_oneof![1 => free, 3 => structured]
}

fn app(root: &FsPath) -> Router {
    let nested = Router::new()
        .route("/x", get(|| async { "nested-x" }))
        .route(
            "/{id}",
            get(|Path(id): Path<String>| async move { format!("nested:{id}") }),
        );
    Router::new()
        .route(
            "/static/{*rest}",
            get(|Path(rest): Path<String>| async move { format!("static:{rest}") }),
        )
        .route(
            "/static/private/{*rest}",
            get(|Path(rest): Path<String>| async move { format!("private:{rest}") }),
        )
        .route("/admin", get(|| async { "admin" }))
        .route(
            "/api/{id}",
            get(|Path(id): Path<String>| async move { format!("api:{id}") }),
        )
        .nest("/nested", nested)
        .nest_service("/files", ServeDir::new(root))
}

/// What a service answered: status, body, and for a redirect the canonical target.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    status: StatusCode,
    body: Vec<u8>,
    location: Option<String>,
}

async fn outcome<S, B>(service: S, path: &str, options: &PathNormalization) -> Outcome
where
    S: tower::Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    // Redirect targets echo the request's spelling; compare what they name.
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| l.to_str().unwrap().to_owned())
        .map(|l| match canonicalize(&l, options) {
            Ok(canonical) => canonical.into_owned(),
            Err(why) => format!("{l} ({why})"),
        });
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Outcome {
        status,
        body,
        location,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn strict() -> PathNormalization {
    PathNormalization::default()
}

/// The settings for services that decode and collapse before they serve (ServeDir).
fn decoding() -> PathNormalization {
    strict()
        .merge_slashes(MergeSlashes::Merge)
        .encoded_unreserved(EncodedUnreserved::Decode)
}

/// Settings that keep data that neither axum nor ServeDir reads as structure.
fn keeping_data() -> PathNormalization {
    strict()
        .path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged)
        .path_parameters(PathParameters::Keep)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 768,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Checks one path: the original parses as a request URI, and if `options` accept it, both
/// spellings give the same outcome from `service`. Returns the canonical path.
async fn same_outcome<S, B>(service: &S, path: &str, options: &PathNormalization) -> Option<String>
where
    S: tower::Service<Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let uri: Uri = path.parse().ok()?;
    let canonical = canonicalize(uri.path(), options).ok()?.into_owned();
    let original = outcome(service.clone(), path, options).await;
    let normalized = outcome(service.clone(), &canonical, options).await;
    assert_eq!(
        original, normalized,
        "{path:?} and its canonical form {canonical:?} ({options})"
    );
    Some(canonical)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn serve_dir_serves_the_canonical_path(path in request_paths(FILES)) {
        let site = site();
        let serve = ServeDir::new(site.path());
        let rt = runtime();
        for options in [strict(), decoding(), keeping_data(), decoding().path_parameters(PathParameters::Keep)] {
            rt.block_on(same_outcome(&serve, &path, &options));
        }
    }

    /// Stronger: the file ServeDir serves is the one the canonical path names, so a rule on
    /// `/private` sees every spelling that reaches `private/x`.
    #[test]
    fn serve_dir_serves_the_file_the_canonical_path_names(path in request_paths(FILES)) {
        let site = site();
        let serve = ServeDir::new(site.path());
        let rt = runtime();
        for options in [strict(), decoding()] {
            let Some(canonical) = rt.block_on(same_outcome(&serve, &path, &options)) else {
                continue;
            };
            let served = rt.block_on(outcome(serve.clone(), &path, &options));
            if served.status == StatusCode::OK {
                // Each file holds its own name.
                let file = String::from_utf8(served.body).unwrap();
                prop_assert_eq!(canonical, file);
            }
        }
    }

    #[test]
    fn axum_routes_the_canonical_path_alike(path in request_paths(ROUTES)) {
        let site = site();
        let router = app(site.path());
        let rt = runtime();
        for options in [strict(), keeping_data()] {
            rt.block_on(same_outcome(&router, &path, &options));
        }
    }

    /// A pattern's canonical form is a canonical path under the same settings, so it can match.
    #[test]
    fn canonical_patterns_are_canonical_paths(path in request_paths(ROUTES)) {
        for options in [strict(), decoding(), keeping_data()] {
            if let Ok(pattern) = canonicalize_pattern(&path, &options) {
                prop_assert!(matches!(
                    canonicalize(&pattern, &options),
                    Ok(std::borrow::Cow::Borrowed(p)) if p == pattern
                ));
            }
        }
    }
}

/// The outcomes of `path` as sent and canonicalized under `options`.
async fn both(router: Router, path: &str, options: &PathNormalization) -> (Outcome, Outcome) {
    let canonical = canonicalize(path, options).unwrap().into_owned();
    (
        outcome(router.clone(), path, options).await,
        outcome(router, &canonical, options).await,
    )
}

fn body(o: &Outcome) -> &str {
    std::str::from_utf8(&o.body).unwrap()
}

#[tokio::test]
async fn diverges_decoding_unreserved_in_front_of_axum() {
    let site = site();
    let options = strict().encoded_unreserved(EncodedUnreserved::Decode);
    let (sent, canonical) = both(app(site.path()), "/%61dmin", &options).await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND);
    assert_eq!(body(&canonical), "admin");
    let (sent, canonical) = both(app(site.path()), "/static/%70rivate/x", &options).await;
    assert_eq!(body(&sent), "static:private/x");
    assert_eq!(body(&canonical), "private:x");
    // Refused by default.
    assert!(canonicalize("/%61dmin", &strict()).is_err());
}

#[tokio::test]
async fn diverges_merging_slashes_in_front_of_axum() {
    let site = site();
    let options = strict().merge_slashes(MergeSlashes::Merge);
    let (sent, canonical) = both(app(site.path()), "/static//private/x", &options).await;
    assert_eq!(body(&sent), "static:/private/x");
    assert_eq!(body(&canonical), "private:x");
    let (sent, canonical) = both(app(site.path()), "//admin", &options).await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND);
    assert_eq!(body(&canonical), "admin");
}

#[tokio::test]
async fn diverges_keeping_spellings_in_front_of_serve_dir() {
    let site = site();
    let serve = ServeDir::new(site.path());
    let private = PathPattern::prefix("/private").unwrap();
    for (path, options) in [
        (
            "//private/x",
            strict().merge_slashes(MergeSlashes::KeepUnchanged),
        ),
        (
            "/private%2Fx",
            strict().path_with_escaped_slashes_action(EscapedSlashesAction::KeepUnchanged),
        ),
    ] {
        let served = outcome(serve.clone(), path, &options).await;
        assert_eq!(body(&served), "/private/x", "{path}");
        // The policy would see a path that a rule on `/private` does not cover.
        let canonical = canonicalize(path, &options).unwrap();
        assert!(!private.matches(&canonical), "{canonical}");
    }
}

#[tokio::test]
async fn diverges_resolving_dot_segments() {
    let site = site();
    let options = strict().dot_segments(DotSegments::Resolve);
    // ServeDir refuses `..`; the resolved path is a file.
    let serve = ServeDir::new(site.path());
    let sent = outcome(serve.clone(), "/public/../private/x", &options).await;
    let canonical = outcome(serve, "/private/x", &options).await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND);
    assert_eq!(body(&canonical), "/private/x");
    // axum routes `..` as a segment.
    let (sent, canonical) = both(app(site.path()), "/api/x/../../admin", &options).await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND);
    assert_eq!(body(&canonical), "admin");
}

/// A trailing slash is kept because both readers tell it apart: ServeDir looks for
/// `x/index.html`, axum has no `/admin/` route.
#[tokio::test]
async fn trailing_slashes_name_other_resources() {
    let site = site();
    let serve = ServeDir::new(site.path());
    assert_eq!(
        body(&outcome(serve.clone(), "/private/x", &strict()).await),
        "/private/x"
    );
    let served = outcome(serve, "/private/x/", &strict()).await;
    assert_eq!(served.status, StatusCode::NOT_FOUND);
    let routed = outcome(app(site.path()), "/admin/", &strict()).await;
    assert_eq!(routed.status, StatusCode::NOT_FOUND);
    assert_eq!(
        canonicalize("/private/x/", &strict()).unwrap(),
        "/private/x/"
    );
}

/// The spellings of a denied ServeDir resource: each is refused by default, and under
/// the decoding settings each one's canonical form is the file's name.
#[tokio::test]
async fn spellings_of_a_served_file() {
    let site = site();
    let router = app(site.path());
    for path in [
        "/files/%70rivate/x",
        "/files//private/x",
        "/files/private%2fx",
        "/files/private/./x",
        "/files/public/../private/x",
        "/files/priv%61te/x",
        "/files/private%5Cx",
    ] {
        assert!(canonicalize(path, &strict()).is_err(), "{path}");
        let served = outcome(router.clone(), path, &strict()).await;
        if served.status == StatusCode::OK {
            assert_eq!(body(&served), "/private/x");
            if let Ok(canonical) = canonicalize(path, &decoding()) {
                assert_eq!(canonical, "/files/private/x", "{path}");
            }
        }
    }
}
