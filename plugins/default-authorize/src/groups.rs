//! Reading the `groups` configuration (JSON written by the host) without building it.
//!
//! The policy runs once per request in a fresh instance, so the group table is read on every
//! decision. Deserializing it into owned structs (as `miniserde` did) allocated every name and
//! glob and went through dynamic visitors: most of this plugin's instructions. This scanner
//! walks the text once, hands each group to a callback with borrowed strings (a string is
//! copied only if it contains an escape), and lets the callback walk a group's device globs
//! in place. It accepts exactly the JSON shape the policy documents: an array of objects with
//! a string `name`, `devices` (array of strings, or null) and `access` (string, or null);
//! other keys are skipped whatever their value; anything else is an error.

use std::borrow::Cow;

/// Nesting deeper than this in a skipped value is refused (the guest's stack is small).
const MAX_DEPTH: u32 = 64;

/// The text is not the expected JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

type Result<T> = std::result::Result<T, Malformed>;

/// One entry of the group table, borrowed from the configuration text.
pub struct Group<'a> {
    pub name: Cow<'a, str>,
    pub access: Option<Cow<'a, str>>,
    text: &'a str,
    /// Offset of the `devices` array, if there is one (already validated).
    devices: Option<usize>,
}

impl<'a> Group<'a> {
    /// True if one of the group's device globs matches `device`.
    pub fn reaches(&self, device: &str) -> bool {
        let Some(at) = self.devices else {
            return false;
        };
        let mut s = Scanner {
            text: self.text,
            i: at,
        };
        let mut hit = false;
        // Validated when the group was read, so this walk cannot fail.
        let _ = s.array(|s| {
            let glob = s.string()?;
            hit = hit || sallyport_plugin::glob::matches(&glob, device);
            Ok(())
        });
        hit
    }
}

/// Calls `each` with every group of `text`, in order. The whole text is checked: an error
/// anywhere is reported even after groups were handed out.
pub fn for_each<'a>(text: &'a str, mut each: impl FnMut(Group<'a>)) -> Result<()> {
    let mut s = Scanner { text, i: 0 };
    s.array(|s| {
        let g = s.group()?;
        each(g);
        Ok(())
    })?;
    match s.peek() {
        None => Ok(()),
        Some(_) => Err(Malformed),
    }
}

struct Scanner<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, without consuming it.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.i) {
            self.i += 1;
        }
        self.bytes().get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// `null`, consumed if it is next.
    fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self
            .bytes()
            .get(self.i..)
            .is_some_and(|b| b.starts_with(word.as_bytes()))
        {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// `[ item, … ]`, calling `item` for each element.
    fn array(&mut self, item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence(b'[', b']', item)
    }

    /// `{ "key": value, … }`, calling `field` with each key (the scanner then at its value).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.sequence(b'{', b'}', |s| {
            let key = s.string()?;
            s.eat(b':')?;
            field(s, &key)
        })
    }

    /// `open item, … close` (possibly empty), calling `item` for each element.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.eat(open)?;
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// One group object. Later duplicates of a key win, as with a derived deserializer.
    fn group(&mut self) -> Result<Group<'a>> {
        let (mut name, mut access, mut devices) = (None, None, None);
        self.object(|s, key| {
            match key {
                "name" => name = Some(s.string()?),
                "access" => access = if s.null()? { None } else { Some(s.string()?) },
                "devices" => {
                    devices = if s.null()? {
                        None
                    } else {
                        let at = s.i;
                        s.array(|s| s.string().map(drop))?;
                        Some(at)
                    }
                }
                _ => s.skip(0)?,
            }
            Ok(())
        })?;
        Ok(Group {
            name: name.ok_or(Malformed)?,
            access,
            text: self.text,
            devices,
        })
    }

    /// A string, borrowed unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.bytes().get(self.i) {
                None => return Err(Malformed),
                Some(b'"') => {
                    // Quotes and backslashes are ASCII, so these are character boundaries.
                    let s = self.text.get(start..self.i).ok_or(Malformed)?;
                    self.i += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => return Err(Malformed),
                Some(_) => self.i += 1,
            }
        }
        let mut out = String::from(self.text.get(start..self.i).ok_or(Malformed)?);
        loop {
            let run = self.i;
            while let Some(&c) = self.bytes().get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(self.text.get(run..self.i).ok_or(Malformed)?);
            match self.bytes().get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let e = *self.bytes().get(self.i + 1).ok_or(Malformed)?;
                    self.i += 2;
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(Malformed),
                    });
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the scanner just past `\u`), pairing surrogates.
    fn unicode_escape(&mut self) -> Result<char> {
        let hi = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&hi) {
            self.literal("\\u")?;
            let lo = self.hex4()?;
            if !(0xdc00..0xe000).contains(&lo) {
                return Err(Malformed);
            }
            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
        } else {
            hi
        };
        char::from_u32(code).ok_or(Malformed)
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.text.get(self.i..self.i + 4).ok_or(Malformed)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Malformed);
        }
        self.i += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Malformed)
    }

    /// Skips any value.
    fn skip(&mut self, depth: u32) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Malformed);
        }
        match self.peek().ok_or(Malformed)? {
            b'"' => self.string().map(drop),
            b'[' => self.array(|s| s.skip(depth + 1)),
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Malformed),
        }
    }

    /// A number: `-?digits(.digits)?([eE][+-]?digits)?`.
    fn number(&mut self) -> Result<()> {
        if self.bytes().get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        self.digits()?;
        if self.bytes().get(self.i) == Some(&b'.') {
            self.i += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.bytes().get(self.i) {
                self.i += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) -> Result<()> {
        let start = self.i;
        while self.bytes().get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        if self.i == start {
            Err(Malformed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<(String, Option<String>, bool)>> {
        let mut out = Vec::new();
        for_each(text, |g| {
            let reaches = g.reaches("edge-1");
            out.push((g.name.into_owned(), g.access.map(Cow::into_owned), reaches))
        })?;
        Ok(out)
    }

    #[test]
    fn groups_are_read_with_their_fields() {
        let text = r#" [ {"name":"a","sudo":true,"devices":["core-*", "edge-?"],"access":"full"},
            {"devices":null,"name":"b","access":null,"extra":{"x":[1,-2.5e3,"}",false]}},
            {"name":"c","devices":[]} ] "#;
        assert_eq!(
            read(text),
            Ok(vec![
                ("a".into(), Some("full".into()), true),
                ("b".into(), None, false),
                ("c".into(), None, false),
            ])
        );
        assert_eq!(read("[]"), Ok(vec![]));
    }

    #[test]
    fn escapes_are_decoded() {
        let text = r#"[{"name":"o\"ps\\\u00fc\ud83d\ude00","devices":["edge-\u0031"]}]"#;
        assert_eq!(read(text), Ok(vec![("o\"ps\\ü😀".into(), None, true)]));
    }

    #[test]
    fn anything_else_is_malformed() {
        for bad in [
            "",
            "{}",
            r#"{"name":"a"}"#,
            "[{}]",
            r#"[{"name":1}]"#,
            r#"[{"name":"a","devices":"x"}]"#,
            r#"[{"name":"a","devices":[1]}]"#,
            r#"[{"name":"a","access":true}]"#,
            r#"[{"name":"a"},]"#,
            r#"[{"name":"a"}] x"#,
            r#"[{"name":"a" "x":1}]"#,
            r#"[{"name":"a","x":01x}]"#,
            r#"[{"name":"a","x":tru}]"#,
            r#"[{"name":"a\q"}]"#,
            r#"[{"name":"a\ud800"}]"#,
            "[{\"name\":\"a\nb\"}]",
            r#"[{"name":"a"#,
        ] {
            assert_eq!(read(bad), Err(Malformed), "{bad}");
        }
        let deep = format!(
            r#"[{{"name":"a","x":{}{}}}]"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(read(&deep), Err(Malformed));
    }
}
