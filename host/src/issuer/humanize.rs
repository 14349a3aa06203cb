//! `time_to_expire`: how long until an access expires, in the caller's language, as the
//! Altostrat API answers it ("15 minutes from now", Spanish "En 15 minutos").
//!
//! The language comes from `Accept-Language` (highest `q` among supported languages wins;
//! anything unsupported falls back to English). Durations are rounded to the nearest unit so
//! an access created for 15 minutes reads "15 minutes" right after creation, not "14".

/// Languages `time_to_expire` is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

/// Picks the best supported language from an `Accept-Language` header value.
pub fn negotiate(header: Option<&str>) -> Lang {
    let Some(header) = header else {
        return Lang::En;
    };
    let mut best: Option<(f32, Lang)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let lang = match primary {
            "es" => Lang::Es,
            "en" => Lang::En,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, l)| l)
}

/// Describes `remaining_ms` (negative when already past) in `lang`.
pub fn time_to_expire(remaining_ms: i64, lang: Lang) -> String {
    // At its expiry instant an access is already expired (`expired` says so too).
    let future = remaining_ms > 0;
    let secs = (remaining_ms.unsigned_abs() as f64) / 1000.0;
    let minutes = (secs / 60.0).round() as u64;
    let (n, unit) = if secs < 30.0 {
        (0, Unit::LessThanMinute)
    } else if minutes < 60 {
        (minutes.max(1), Unit::Minute)
    } else if minutes < 24 * 60 {
        ((minutes as f64 / 60.0).round() as u64, Unit::Hour)
    } else {
        ((minutes as f64 / 1440.0).round() as u64, Unit::Day)
    };
    // Rounding may carry into the next unit (e.g. 23.6 h → 24 h): say "1 day", not "24 hours".
    let (n, unit) = match unit {
        Unit::Hour if n >= 24 => (1, Unit::Day),
        _ => (n, unit),
    };
    let phrase = match (lang, unit) {
        (Lang::En, Unit::LessThanMinute) => "less than a minute".to_string(),
        (Lang::Es, Unit::LessThanMinute) => "menos de un minuto".to_string(),
        (Lang::En, u) => format!("{n} {}", plural(n, u.en())),
        (Lang::Es, u) => format!("{n} {}", plural_es(n, u.es())),
    };
    match (lang, future) {
        (Lang::En, true) => format!("{phrase} from now"),
        (Lang::En, false) => format!("{phrase} ago"),
        (Lang::Es, true) => format!("En {phrase}"),
        (Lang::Es, false) => format!("Hace {phrase}"),
    }
}

#[derive(Clone, Copy)]
enum Unit {
    LessThanMinute,
    Minute,
    Hour,
    Day,
}

impl Unit {
    fn en(self) -> &'static str {
        match self {
            Unit::LessThanMinute | Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
    fn es(self) -> &'static str {
        match self {
            Unit::LessThanMinute | Unit::Minute => "minuto",
            Unit::Hour => "hora",
            Unit::Day => "día",
        }
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn plural_es(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_examples() {
        assert_eq!(
            time_to_expire(15 * 60_000 - 40, Lang::En),
            "15 minutes from now"
        );
        assert_eq!(time_to_expire(15 * 60_000 - 40, Lang::Es), "En 15 minutos");
    }

    #[test]
    fn units_and_past() {
        assert_eq!(time_to_expire(60 * 60_000, Lang::En), "1 hour from now");
        assert_eq!(time_to_expire(60 * 60_000, Lang::Es), "En 1 hora");
        assert_eq!(time_to_expire(24 * 60 * 60_000 - 5, Lang::Es), "En 1 día");
        assert_eq!(time_to_expire(3 * 60 * 60_000, Lang::Es), "En 3 horas");
        assert_eq!(time_to_expire(60_000, Lang::En), "1 minute from now");
        assert_eq!(
            time_to_expire(5_000, Lang::En),
            "less than a minute from now"
        );
        assert_eq!(time_to_expire(-5 * 60_000, Lang::En), "5 minutes ago");
        assert_eq!(time_to_expire(-5 * 60_000, Lang::Es), "Hace 5 minutos");
    }

    #[test]
    fn accept_language() {
        assert_eq!(negotiate(None), Lang::En);
        assert_eq!(negotiate(Some("es")), Lang::Es);
        assert_eq!(negotiate(Some("es-ES,es;q=0.9,en;q=0.8")), Lang::Es);
        assert_eq!(negotiate(Some("en;q=0.5, es;q=0.9")), Lang::Es);
        assert_eq!(negotiate(Some("fr-FR, de")), Lang::En);
        assert_eq!(negotiate(Some("fr, es;q=0.1")), Lang::Es);
        assert_eq!(negotiate(Some("es;q=0")), Lang::En);
    }
}
