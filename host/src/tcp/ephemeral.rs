//! Start-up check of the transient port range against the kernel's ephemeral ports.
//!
//! Linux picks the source port of every outgoing connection (the gateway's own connections to
//! devices included) from `net.ipv4.ip_local_port_range`, skipping the ports listed in
//! `net.ipv4.ip_local_reserved_ports`. A transient port handed out that way cannot be bound by
//! an access's listener until the connection closes (the listener retries every second, see
//! [`super::listeners`]). The default range, `45000-45999`, lies inside Linux's default
//! ephemeral range, so at start the gateway says, once, which of its ports are exposed and the
//! `sysctl` that reserves them. Nothing is changed on the machine: that is the admin's call.

use std::ops::RangeInclusive;

/// Where Linux publishes the two settings.
const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Logs a warning if ports of `transient` can be taken as ephemeral source ports. Silent
/// where the settings cannot be read (not Linux, or `/proc` hidden).
pub fn warn_if_exposed(transient: &RangeInclusive<u16>) {
    let (Ok(range), Ok(reserved)) = (
        std::fs::read_to_string(PORT_RANGE),
        std::fs::read_to_string(RESERVED),
    ) else {
        tracing::debug!("ephemeral port settings not readable; range check skipped");
        return;
    };
    match exposed(transient, &range, &reserved) {
        Some(0) => {}
        Some(n) => tracing::warn!(
            exposed_ports = n,
            ephemeral = %range.split_whitespace().collect::<Vec<_>>().join("-"),
            "{n} of the transient ports {}-{} can be taken by outgoing connections, which delays \
             the listeners of accesses given those ports; reserve the range with \
             `sysctl net.ipv4.ip_local_reserved_ports={}-{}`",
            transient.start(),
            transient.end(),
            transient.start(),
            transient.end(),
        ),
        None => tracing::debug!(range, reserved, "ephemeral port settings not understood"),
    }
}

/// How many ports of `transient` lie in the ephemeral range `range` (`"FIRST\tLAST"`) and
/// outside the reserved list `reserved` (`"8080,45000-45999"`, may be empty). `None` if
/// either text is malformed.
pub fn exposed(transient: &RangeInclusive<u16>, range: &str, reserved: &str) -> Option<usize> {
    let mut bounds = range.split_whitespace().map(|p| p.parse::<u16>());
    let ephemeral = match (bounds.next(), bounds.next(), bounds.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => a..=b,
        _ => return None,
    };
    let reserved = reserved
        .trim()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let item = item.trim();
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            Some(a.trim().parse::<u16>().ok()?..=b.trim().parse::<u16>().ok()?)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(
        transient
            .clone()
            .filter(|p| ephemeral.contains(p) && !reserved.iter().any(|r| r.contains(p)))
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ports_inside_the_ephemeral_range_that_are_not_reserved() {
        let linux_default = "32768\t60999\n";
        assert_eq!(exposed(&(45000..=45999), linux_default, "\n"), Some(1000));
        assert_eq!(exposed(&(21900..=21999), linux_default, ""), Some(0));
        // Straddling the lower bound: only the part above it is exposed.
        assert_eq!(exposed(&(32760..=32779), linux_default, ""), Some(12));
    }

    #[test]
    fn reserved_ports_and_ranges_are_not_exposed() {
        let r = "32768 60999";
        assert_eq!(exposed(&(45000..=45999), r, "45000-45999\n"), Some(0));
        assert_eq!(exposed(&(45000..=45999), r, "8080,45000-45499"), Some(500));
        assert_eq!(exposed(&(45000..=45009), r, "45003, 45005"), Some(8));
    }

    #[test]
    fn malformed_settings_are_not_guessed_at() {
        assert_eq!(exposed(&(45000..=45999), "32768", ""), None);
        assert_eq!(exposed(&(45000..=45999), "a b", ""), None);
        assert_eq!(exposed(&(45000..=45999), "1 2 3", ""), None);
        assert_eq!(exposed(&(45000..=45999), "32768 60999", "45000-x"), None);
    }
}
