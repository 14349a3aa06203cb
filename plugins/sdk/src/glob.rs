//! Glob patterns over names: `*` matches any run of characters (also none), `?` exactly one
//! character, everything else itself (case-sensitive). No character classes, no escapes.

/// True if `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    // Works on bytes, a character at a time (the length of a UTF-8 character is in its first
    // byte), so matching allocates nothing: it runs on every decision.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let tn = char_len(t[ti]);
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += tn;
            }
            Some(&c) if p.get(pi..pi + char_len(c)) == t.get(ti..ti + tn) => {
                pi += tn;
                ti += tn;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry from there.
                Some((sp, st)) => {
                    let st = st + char_len(t[st]);
                    star = Some((sp, st));
                    pi = sp + 1;
                    ti = st;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Length in bytes of the UTF-8 character that starts with `first`.
fn char_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// True if any of `patterns` matches `text`.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], text: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_wildcards() {
        assert!(matches("*", ""));
        assert!(matches("*", "device1"));
        assert!(matches("device1", "device1"));
        assert!(!matches("device1", "device10"));
        assert!(matches("device?", "device1"));
        assert!(!matches("device?", "device"));
        assert!(matches("dev*1", "device1"));
        assert!(matches("*-core-*", "fra-core-01"));
        assert!(!matches("*-core-*", "fra-edge-01"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("**?", "x"));
        assert!(!matches("", "x"));
        assert!(!matches("Device1", "device1"));
        assert!(matches("r?ü*", "rxüter"));
        assert!(matches("?", "ü"));
        assert!(!matches("??", "ü"));
        assert!(matches("*ü", "aüü"));
        assert!(!matches("ü", "ö"));
        assert!(matches("*€?", "x€€😀"));
    }

    #[test]
    fn any_of_several() {
        assert!(matches_any(&["lab-*", "core?"], "core1"));
        assert!(!matches_any::<&str>(&[], "core1"));
    }
}
