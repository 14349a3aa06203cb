//! Router-level tests of the web pages (filled in below).
