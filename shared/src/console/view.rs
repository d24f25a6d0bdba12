//! The console's page frame and small formatting helpers. Everything goes through `maud`,
//! which escapes text and attribute values; nothing here builds HTML by hand.

use super::session::Operator;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// The sections in the navigation bar: (path, label).
const NAV: [(&str, &str); 6] = [
    ("/console", "Overview"),
    ("/console/tenants", "Tenants"),
    ("/console/jobs", "Jobs"),
    ("/console/rollouts", "Rollouts"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/activity", "Activity"),
];

/// A page for a signed-in operator: navigation, who is signed in, the notice of the action
/// just done (if any), then `body`.
pub fn page(title: &str, section: &str, operator: &Operator, notice: Option<Markup>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "pgfleet" }
                    nav aria-label="Sections" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if path == section {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { (operator.name) " · " (operator.role.as_str()) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(operator.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if let Some(notice) = notice { (notice) }
                    (body)
                    p.live-status aria-live="polite" #live-status {}
                }
                script src="/console/static/console.js" defer {}
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main.narrow { (body) }
            }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · pgfleet" }
            link rel="stylesheet" href="/console/static/console.css";
        }
    }
}

/// A status as text with a symbol, so it reads without colour; the class adds colour.
pub fn status(s: &str) -> Markup {
    let (symbol, class) = match s {
        "succeeded" | "active" | "done" | "ok" | "delivered" => ("✓", "good"),
        "failed" | "dead" | "halted" | "removed" => ("✗", "bad"),
        "running" | "provisioning" | "moving" | "deleting" | "pruning" => ("●", "busy"),
        "queued" | "pending" | "draining" => ("○", "wait"),
        "suspended" | "deleted" | "pruned" => ("–", "off"),
        _ => ("·", "other"),
    };
    html! { span class={ "status " (class) } { span aria-hidden="true" { (symbol) " " } (s) } }
}

/// A time as "3 min ago", with the exact UTC time in `datetime` and the tooltip.
pub fn ago(t: &DateTime<Utc>) -> Markup {
    let exact = crate::views::time(t);
    html! { time datetime=(exact) title=(exact) { (age_text(Utc::now() - *t)) } }
}

/// Same for an optional time ("–" when absent).
pub fn ago_opt(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => ago(t),
        None => html! { "–" },
    }
}

/// "12 s ago", "3 min ago", "5 h ago", "4 d ago"; "in 3 min" for the future.
pub fn age_text(d: chrono::Duration) -> String {
    let (secs, future) = (d.num_seconds().abs(), d.num_seconds() < 0);
    let text = match secs {
        0..=89 => format!("{secs} s"),
        90..=5399 => format!("{} min", (secs + 30) / 60),
        5400..=172_799 => format!("{} h", (secs + 1800) / 3600),
        _ => format!("{} d", (secs + 43_200) / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// An age in seconds as text ("never" when absent).
pub fn age_secs(secs: Option<f64>) -> String {
    match secs {
        Some(s) => age_text(chrono::Duration::seconds(s as i64)),
        None => "never".into(),
    }
}

/// Bytes as B, KiB, MiB, GiB.
pub fn bytes(n: Option<i64>) -> String {
    let Some(n) = n else { return "–".into() };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// A duration in milliseconds, readable.
pub fn millis(ms: Option<i64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{:.1} min", ms as f64 / 60_000.0),
    }
}

/// The first 8 characters of an id (the whole id is in the link and the title).
pub fn short_id(id: &uuid::Uuid) -> String {
    id.to_string()[..8].to_owned()
}

/// Text cut to `max` characters, with an ellipsis.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A link to the confirmation page of an action.
pub fn action_link(action: &str, target: &str, label: &str, extra: &[(&str, &str)]) -> Markup {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("action", action).append_pair("target", target);
    for (k, v) in extra {
        query.append_pair(k, v);
    }
    html! { a.button href={ "/console/confirm?" (query.finish()) } { (label) } }
}

/// A query string built from pairs (values escaped).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age_text(chrono::Duration::seconds(5)), "5 s ago");
        assert_eq!(age_text(chrono::Duration::seconds(600)), "10 min ago");
        assert_eq!(age_text(chrono::Duration::seconds(-600)), "in 10 min");
        assert_eq!(age_text(chrono::Duration::hours(30)), "30 h ago");
        assert_eq!(age_text(chrono::Duration::days(9)), "9 d ago");
    }

    #[test]
    fn escapes_what_it_renders() {
        let markup = status("<script>alert(1)</script>");
        assert!(!markup.into_string().contains("<script>"));
        assert_eq!(bytes(Some(1536)), "1.5 KiB");
    }
}
