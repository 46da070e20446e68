//! The open API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives (so it follows the code), served at
//! `GET /api/v1/openapi.json` (not metered: reading the contract costs no quota), and an
//! interactive reference at `GET /api/docs`. `tests/open_api_rest/openapi_document.rs` compares it to the
//! committed `tests/snapshots/openapi.json`, so every change to the contract is deliberate.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::operations::OpenApiDoc;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::Html;
use axum::response::Response;

/// The document as served and snapshot-tested.
pub fn document() -> utoipa::openapi::OpenApi {
    OpenApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// Where the vendored Scalar bundle is served: versioned, so it can be cached forever.
pub const SCALAR_BUNDLE_PATH: &str = concat!("/api/docs/scalar-", env!("SCALAR_VERSION"), ".js");

/// `@scalar/api-reference`'s standalone bundle at the version in `assets/scalar/VERSION`,
/// checked against its pinned SHA-512 by the build script, plain and gzipped.
const SCALAR_BUNDLE: &[u8] = include_bytes!("../../../assets/scalar/standalone.js");
const SCALAR_BUNDLE_GZIP: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scalar-standalone.js.gz"));
const SCALAR_BUNDLE_ETAG: &str = concat!("\"scalar-", env!("SCALAR_VERSION"), "\"");

/// Everything the page needs comes from this origin: the reference works on a network with no
/// route to a CDN, and nothing it renders (the document's descriptions included) can load or
/// run code from elsewhere. Styles may be inline: the bundle injects its stylesheet and sets
/// style attributes at run time.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
     connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const REFERENCE_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en">
  <head>
    <title>Journal open API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <link rel="icon" href="data:," />
  </head>
  <body>
    <div id="api-reference" data-url="/api/v1/openapi.json" data-configuration='"#,
    // Read by the bundle from the element (no inline script, which the policy refuses), so it
    // applies from the first render: nothing is fetched from Scalar's servers (web fonts,
    // telemetry, the AI agent) and no link leads there.
    r#"{"withDefaultFonts":false,"telemetry":false,"agent":{"disabled":true},"hideClientButton":true,"showDeveloperTools":"never"}"#,
    r#"'></div>
    <script src="/api/docs/scalar-"#,
    env!("SCALAR_VERSION"),
    r#".js"></script>
  </body>
</html>
"#
);

/// `GET /api/docs`: Scalar's interactive reference on the document, served entirely by the api
/// (the bundle is vendored and embedded in the binary), under a strict Content-Security-Policy.
pub async fn reference_page() -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                DOCS_CONTENT_SECURITY_POLICY,
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(REFERENCE_PAGE),
    )
        .into_response()
}

/// `GET /api/docs/scalar-<version>.js`: gzipped when the client accepts it (about a quarter of
/// the size), cached for a year (the path changes with the version).
pub async fn scalar_bundle(request_headers: HeaderMap) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        (header::VARY, "Accept-Encoding"),
        (header::ETAG, SCALAR_BUNDLE_ETAG),
    ];
    let revalidating = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| matches!(tag.trim(), SCALAR_BUNDLE_ETAG | "*"));
    if revalidating {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if accepts_gzip(&request_headers) {
        (
            headers,
            [(header::CONTENT_ENCODING, "gzip")],
            SCALAR_BUNDLE_GZIP,
        )
            .into_response()
    } else {
        (headers, SCALAR_BUNDLE).into_response()
    }
}

/// Whether `Accept-Encoding` lists `gzip` (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|quality| quality.trim().parse::<f32>().ok())
                    .is_some_and(|quality| quality <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&accept("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&accept("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&accept("*")));
        assert!(!accepts_gzip(&accept("gzip;q=0")));
        assert!(!accepts_gzip(&accept("br, deflate")));
        assert!(!accepts_gzip(&accept("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_page_loads_only_its_own_scripts() {
        assert!(REFERENCE_PAGE.contains(SCALAR_BUNDLE_PATH));
        assert!(REFERENCE_PAGE.contains(r#"data-url="/api/v1/openapi.json""#));
        assert!(!REFERENCE_PAGE.contains("https://"));
        assert!(!DOCS_CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(!DOCS_CONTENT_SECURITY_POLICY.contains("script-src 'self' 'unsafe-inline'"));
    }
}
