//! Static files, embedded in the binary: the console page, the pages' script and style, and
//! the vendored xterm.js (`host/assets/vendor`, from the npm packages `@xterm/xterm` and
//! `@xterm/addon-fit`, with their MIT licences served beside them). Nothing is fetched from
//! a CDN.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html;

/// The direct console page (static: its script reads the device and the fragment).
pub const CONSOLE_HTML: &str = include_str!("../../assets/console.html");

/// `(name, content type, bytes)` of everything under `/assets/`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "site.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/site.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    ),
    (
        "tracking.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/tracking.js"),
    ),
    (
        "xterm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/xterm.js"),
    ),
    (
        "xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/xterm.css"),
    ),
    (
        "addon-fit.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/addon-fit.js"),
    ),
    (
        "LICENSE-xterm.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/LICENSE-xterm"),
    ),
    (
        "LICENSE-addon-fit.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/vendor/LICENSE-addon-fit"),
    ),
];

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let mut r = (StatusCode::OK, *bytes).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            // Embedded: they change only with the binary. Revalidate after a short while.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        None => (
            StatusCode::NOT_FOUND,
            html::error_page(StatusCode::NOT_FOUND, "There is no such file."),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_xterm_is_embedded_with_its_licence() {
        let names: Vec<_> = FILES.iter().map(|f| f.0).collect();
        for n in ["xterm.js", "xterm.css", "addon-fit.js", "LICENSE-xterm.txt"] {
            assert!(names.contains(&n), "{n}");
        }
        let licence = FILES
            .iter()
            .find(|f| f.0 == "LICENSE-xterm.txt")
            .map(|f| f.2);
        assert!(
            licence
                .is_some_and(|l| l.windows(3).any(|w| w == b"MIT") || l.starts_with(b"Copyright"))
        );
        assert!(!CONSOLE_HTML.contains("http://") && !CONSOLE_HTML.contains("https://"));
    }
}
