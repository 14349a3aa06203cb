//! Server-rendered HTML: the tracking page, its sign-in form and error pages. Every value that
//! comes from data is escaped with [`escape`]; the pages load their script from `/assets`
//! (no inline script, as the Content-Security-Policy demands) and work without it, apart from
//! live updates.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::Html;

use super::tracking::Row;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, script: Option<&str>, body: &str) -> Html<String> {
    let script = script
        .map(|s| format!("<script src=\"/assets/{s}\" defer></script>\n"))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} — sallyport</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/site.css\">\n{script}</head>\n\
         <body>\n{body}\n</body>\n</html>\n",
        title = escape(title)
    ))
}

/// A page that says what went wrong, with a way back.
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        title,
        None,
        &format!(
            "<main>\n<h1>{t}</h1>\n<p role=\"alert\">{m}</p>\n\
             <p><a href=\"/tracking\">Back to the tracking page</a></p>\n</main>",
            t = escape(title),
            m = escape(message)
        ),
    )
}

/// The sign-in form; `csrf` is the double-submit token also set as a cookie.
pub fn sign_in_page(csrf: &str, error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p role=\"alert\" class=\"error\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    layout(
        "Sign in",
        None,
        &format!(
            "<main class=\"narrow\">\n<h1>Sign in to the tracking page</h1>\n{error}\
             <form method=\"post\" action=\"/tracking/login\">\n\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
             <p><label for=\"username\">Username</label>\n\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus></p>\n\
             <p><label for=\"password\">Password</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\n\
             <p><button type=\"submit\">Sign in</button></p>\n</form>\n</main>",
            csrf = escape(csrf)
        ),
    )
}

/// One table row; `tracking.js` builds the same markup from the JSON rows.
fn row(r: &Row, csrf: &str) -> String {
    let mut action = String::new();
    if r.live {
        let site = r
            .site
            .as_deref()
            .map(|s| {
                format!(
                    "<input type=\"hidden\" name=\"site\" value=\"{}\">",
                    escape(s)
                )
            })
            .unwrap_or_default();
        action = format!(
            "<form method=\"post\" action=\"/tracking/terminate\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"kind\" value=\"{kind}\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\">{site}\
             <button type=\"submit\" aria-label=\"{label}\">Terminate</button></form>",
            csrf = escape(csrf),
            kind = escape(r.kind),
            id = escape(&r.id),
            label = escape(&r.terminate_label()),
        );
    }
    format!(
        "<tr data-key=\"{key}\"><td>{user}</td><td>{device}</td><td>{kind}</td>\
         <td><span class=\"state state-{state}\">{state}</span></td><td>{source}</td>\
         <td>{started}</td><td>{expires}</td><td>{action}</td></tr>\n",
        key = escape(&r.key()),
        user = escape(&r.user),
        device = escape(&r.device),
        kind = escape(&r.r#type),
        state = escape(&r.state),
        source = escape(&r.source),
        started = escape(&r.started),
        expires = escape(&r.expires),
    )
}

/// The tracking page for a signed-in user.
pub fn tracking_page(
    user: &str,
    sees_all: bool,
    csrf: &str,
    notice: Option<&str>,
    rows: &[Row],
) -> Html<String> {
    let mut body = String::new();
    let scope = if sees_all {
        "everyone's sessions and accesses"
    } else {
        "your own sessions and accesses"
    };
    let _ = write!(
        body,
        "<header class=\"top\">\n<h1>Open sessions and transient accesses</h1>\n\
         <p>Signed in as <strong>{user}</strong>; showing {scope}.</p>\n\
         <form method=\"post\" action=\"/tracking/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Sign out</button></form>\n</header>\n<main>\n\
         <p id=\"notice\" role=\"status\">{notice}</p>\n\
         <table id=\"tracking\" data-csrf=\"{csrf}\">\n\
         <caption>Sessions and accesses, newest first. <span id=\"updated\">Updates every 2 seconds.</span></caption>\n\
         <thead><tr><th scope=\"col\">User</th><th scope=\"col\">Device</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Source</th><th scope=\"col\">Started</th>\
         <th scope=\"col\">Expires / ended</th><th scope=\"col\">Action</th></tr></thead>\n<tbody>\n",
        user = escape(user),
        csrf = escape(csrf),
        notice = escape(notice.unwrap_or_default()),
    );
    if rows.is_empty() {
        body.push_str("<tr class=\"empty\"><td colspan=\"8\">No sessions or accesses.</td></tr>\n");
    }
    for r in rows {
        body.push_str(&row(r, csrf));
    }
    body.push_str("</tbody>\n</table>\n</main>");
    layout("Tracking", Some("tracking.js"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pages_have_no_inline_script() {
        let Html(page) = tracking_page("<u>", true, "c", Some("<b>"), &[]);
        assert!(!page.contains("<u>") && !page.contains("<b>"));
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/assets/tracking.js\" defer></script>"));
    }
}
