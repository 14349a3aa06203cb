//! Glob patterns over names: `*` matches any run of characters (also none), `?` exactly one
//! character, everything else itself (case-sensitive). No character classes, no escapes.

/// True if `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry from there.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
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
    }

    #[test]
    fn any_of_several() {
        assert!(matches_any(&["lab-*", "core?"], "core1"));
        assert!(!matches_any::<&str>(&[], "core1"));
    }
}
