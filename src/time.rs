//! Conversions between epoch milliseconds and the ISO-8601 text the data set and the API use.
//!
//! The CSV files carry dates as epoch milliseconds and the API renders them as
//! `2020-07-27T21:18:34.409Z`. Doing the calendar arithmetic here (rather than pulling in a
//! date crate) keeps both the loader's hot loop and the renderer allocation-free.

/// The first and last instants PostgreSQL takes in the ISO form this module writes (years 1
/// to 9999): a date outside them cannot be loaded as written.
pub const FIRST_ISO_MS: i64 = -62_135_596_800_000; // 0001-01-01T00:00:00.000Z
pub const LAST_ISO_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Appends `ms` (milliseconds since 1970-01-01T00:00:00Z) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// PostgreSQL accepts the same text as `timestamptz` input for years 1 to 9999, so the loader
/// writes it into COPY streams unchanged (and skips a row whose date lies outside them).
/// Years outside 0..=9999 are clamped to that range's edges, which PostgreSQL would reject or
/// render differently anyway.
pub fn push_iso_millis(out: &mut Vec<u8>, ms: i64) {
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
    let ms = ms.clamp(MIN_MS, LAST_ISO_MS);
    let days = ms.div_euclid(86_400_000);
    let ms_of_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, secs / 3600, 2);
    out.push(b':');
    push_digits(out, secs / 60 % 60, 2);
    out.push(b':');
    push_digits(out, secs % 60, 2);
    out.push(b'.');
    push_digits(out, ms_of_day % 1000, 3);
    out.push(b'Z');
}

/// The same as [`push_iso_millis`], as a `String`.
pub fn iso_millis(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_iso_millis(&mut out, ms);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&out).into_owned()
}

fn push_digits(out: &mut Vec<u8>, value: i64, width: usize) {
    let mut buf = [b'0'; 4];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::iso_millis;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(1_595_884_714_409), "2020-07-27T21:18:34.409Z");
        assert_eq!(iso_millis(1_609_325_851_021), "2020-12-30T10:57:31.021Z");
        assert_eq!(iso_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
    }
}
