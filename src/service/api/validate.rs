//! Request fields: typed extraction with the ML sibling's aliases, and the rules every value must
//! pass before it can reach a `pct` argv. A wrong type is 400, a well-typed bad value 422; either
//! way each failing field is named.

use serde_json::{Map, Value};

use crate::config::MIN_VMID;

pub const MAX_VMID: u32 = 999_999_999;
/// Proxmox's lower bound for `memory`, MB.
pub const MIN_MEMORY_MB: u64 = 16;
/// Snapshot names Proxmox or its backups use themselves.
pub const RESERVED_SNAPSHOT_NAMES: [&str; 2] = ["vzdump", "current"];
pub const MAX_DESCRIPTION_CHARS: usize = 8192;

pub const LXC_ID: &[&str] = &["lxc_id", "vm_id", "container_id"];
pub const NEW_LXC_ID: &[&str] = &["new_lxc_id", "new_vm_id"];
pub const NEW_LXC_NAME: &[&str] = &["new_lxc_name", "new_vm_name", "hostname"];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Where the fields come from: a JSON object (POST, DELETE) or the query string (GET).
pub enum Source<'a> {
    Json(&'a Map<String, Value>),
    Query(&'a [(String, String)]),
}

/// Collects typed values and every failing field.
pub struct Fields<'a> {
    src: Source<'a>,
    pub type_errors: Vec<FieldError>,
    pub value_errors: Vec<FieldError>,
}

/// A value as found, before typing.
enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Fields<'a> {
    pub fn new(src: Source<'a>) -> Fields<'a> {
        Fields {
            src,
            type_errors: Vec::new(),
            value_errors: Vec::new(),
        }
    }

    fn find(&self, names: &[&'static str]) -> Option<(&'static str, Raw<'a>)> {
        names.iter().find_map(|&n| match &self.src {
            Source::Json(m) => m.get(n).filter(|v| !v.is_null()).map(|v| (n, Raw::Json(v))),
            Source::Query(q) => q
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| (n, Raw::Text(v.as_str()))),
        })
    }

    pub fn type_error(&mut self, field: &str, message: &str) {
        self.type_errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn value_error(&mut self, field: &str, message: String) {
        self.value_errors.push(FieldError {
            field: field.into(),
            message,
        });
    }

    /// An integer field. Strings are the wrong type in JSON; the query string must hold digits.
    pub fn int(&mut self, names: &[&'static str], required: bool) -> Option<(&'static str, i64)> {
        self.int_written(names, required)
            .map(|(name, n, _)| (name, n))
    }

    /// `int`, with the value as written. An integer beyond `i64` is still an integer (out of
    /// range, not the wrong type): it is saturated.
    fn int_written(
        &mut self,
        names: &[&'static str],
        required: bool,
    ) -> Option<(&'static str, i64, String)> {
        let Some((name, raw)) = self.find(names) else {
            if required {
                self.value_error(names[0], "is required".into());
            }
            return None;
        };
        let n = match &raw {
            Raw::Json(v) => v
                .as_i64()
                .or_else(|| v.as_u64().map(|_| i64::MAX))
                .map(|n| (n, v.to_string())),
            Raw::Text(t) => saturated_int(t).map(|n| (n, t.to_string())),
        };
        if n.is_none() {
            self.type_error(name, "must be an integer");
        }
        n.map(|(n, written)| (name, n, written))
    }

    /// An integer within `lo..=hi`.
    pub fn int_in(
        &mut self,
        names: &[&'static str],
        lo: i64,
        hi: i64,
        required: bool,
    ) -> Option<i64> {
        let (name, n, written) = self.int_written(names, required)?;
        if n < lo || n > hi {
            self.value_error(name, format!("must be from {lo} to {hi}, got {written}"));
            return None;
        }
        Some(n)
    }

    /// A VMID: an integer from 100 to 999 999 999.
    pub fn vmid(&mut self, names: &[&'static str]) -> Option<u32> {
        self.int_in(names, i64::from(MIN_VMID), i64::from(MAX_VMID), true)
            .map(|n| n as u32)
    }

    pub fn string(
        &mut self,
        names: &[&'static str],
        required: bool,
    ) -> Option<(&'static str, String)> {
        let Some((name, raw)) = self.find(names) else {
            if required {
                self.value_error(names[0], "is required".into());
            }
            return None;
        };
        let s = match raw {
            Raw::Json(v) => v.as_str().map(str::to_string),
            Raw::Text(t) => Some(t.to_string()),
        };
        if s.is_none() {
            self.type_error(name, "must be a string");
        }
        s.map(|s| (name, s))
    }

    /// A string that must pass `rule`.
    pub fn checked(
        &mut self,
        names: &[&'static str],
        required: bool,
        rule: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let (name, s) = self.string(names, required)?;
        match rule(&s) {
            Ok(()) => Some(s),
            Err(m) => {
                self.value_error(name, m);
                None
            }
        }
    }

    /// 400 when any type was wrong, else 422 when any value was bad.
    pub fn finish(self) -> Result<(), (u16, Vec<FieldError>)> {
        if !self.type_errors.is_empty() {
            return Err((400, self.type_errors));
        }
        if !self.value_errors.is_empty() {
            return Err((422, self.value_errors));
        }
        Ok(())
    }
}

/// A query-string integer, saturated at the `i64` bounds; `None` when it is not one.
fn saturated_int(t: &str) -> Option<i64> {
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    integer.then_some(if negative { i64::MIN } else { i64::MAX })
}

/// Proxmox's `pve-configid`: a letter, then letters, digits, `-` and `_`, 2–40 characters; not a
/// name Proxmox reserves.
pub fn snapshot_name(s: &str) -> Result<(), String> {
    let ok_len = (2..=40).contains(&s.len());
    let first = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !(ok_len && first && rest) {
        return Err("must start with a letter and hold 2 to 40 letters, digits, '-' or '_'".into());
    }
    if RESERVED_SNAPSHOT_NAMES.contains(&s) {
        return Err(format!("`{s}` is reserved by Proxmox"));
    }
    Ok(())
}

/// A DNS name: labels of letters, digits and `-`, not starting or ending with `-`, at most 63
/// characters each and 253 in all.
pub fn hostname(s: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
        return Err("must be a DNS name: labels of letters, digits and '-', not starting or ending with '-'".into());
    }
    Ok(())
}

/// A snapshot description: free text, but never an option and never a control character other
/// than newline and tab.
pub fn description(s: &str) -> Result<(), String> {
    if s.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if s.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "must be at most {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields_of(v: &Value) -> Fields<'_> {
        Fields::new(Source::Json(v.as_object().unwrap()))
    }

    #[test]
    fn vmid_accepts_aliases_and_bounds() {
        let v = json!({"vm_id": 101});
        let mut f = fields_of(&v);
        assert_eq!(f.vmid(LXC_ID), Some(101));
        assert!(f.finish().is_ok());
        let v = json!({"container_id": 999_999_999});
        assert_eq!(fields_of(&v).vmid(LXC_ID), Some(999_999_999));
    }

    #[test]
    fn vmid_99_is_invalid_and_a_string_is_the_wrong_type() {
        let v = json!({"lxc_id": 99});
        let mut f = fields_of(&v);
        assert_eq!(f.vmid(LXC_ID), None);
        let (code, errs) = f.finish().unwrap_err();
        assert_eq!(code, 422);
        assert_eq!(errs[0].field, "lxc_id");
        let v = json!({"lxc_id": "101; rm -rf /"});
        let mut f = fields_of(&v);
        assert_eq!(f.vmid(LXC_ID), None);
        assert_eq!(f.finish().unwrap_err().0, 400);
        let v = json!({"lxc_id": 101.5});
        let mut f = fields_of(&v);
        f.vmid(LXC_ID);
        assert_eq!(f.finish().unwrap_err().0, 400);
    }

    #[test]
    fn query_vmid_must_be_digits() {
        let q = vec![("lxc_id".to_string(), "101;id".to_string())];
        let mut f = Fields::new(Source::Query(&q));
        assert_eq!(f.vmid(LXC_ID), None);
        assert_eq!(f.finish().unwrap_err().0, 400);
    }

    #[test]
    fn every_failing_field_is_listed() {
        let v = json!({"lxc_id": 5, "snapshot_name": "-purge"});
        let mut f = fields_of(&v);
        f.vmid(LXC_ID);
        f.checked(&["snapshot_name"], true, snapshot_name);
        f.int(&["cores"], true);
        let (code, errs) = f.finish().unwrap_err();
        assert_eq!(code, 422);
        let names: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["lxc_id", "snapshot_name", "cores"]);
    }

    #[test]
    fn an_integer_beyond_i64_is_out_of_range_not_the_wrong_type() {
        let v = json!({"lxc_id": u64::MAX, "cores": 2});
        let mut f = fields_of(&v);
        assert_eq!(f.vmid(LXC_ID), None);
        let (code, errs) = f.finish().unwrap_err();
        assert_eq!(code, 422);
        assert_eq!(
            errs[0].message,
            "must be from 100 to 999999999, got 18446744073709551615"
        );
        let q = vec![("lxc_id".to_string(), "99999999999999999999".to_string())];
        let mut f = Fields::new(Source::Query(&q));
        assert_eq!(f.vmid(LXC_ID), None);
        assert_eq!(f.finish().unwrap_err().0, 422);
    }

    #[test]
    fn snapshot_names_follow_proxmox() {
        for ok in ["ab", "before-upgrade", "s_1", &"a".repeat(40)] {
            assert_eq!(snapshot_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "-purge",
            "a",
            "1abc",
            "a b",
            "a;b",
            "",
            &"a".repeat(41),
            "vzdump",
            "current",
            "ä1",
        ] {
            assert!(snapshot_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_dns_names() {
        for ok in ["web1", "web-1.example.org", "a"] {
            assert_eq!(hostname(ok), Ok(()), "{ok}");
        }
        for bad in ["-web", "web-", "a..b", "", "we b", "x_y", &"a".repeat(64)] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_never_look_like_options() {
        assert!(description("before the upgrade\nby ops").is_ok());
        assert!(description("-purge").is_err());
        assert!(description("a\u{1b}[2J").is_err());
    }
}
