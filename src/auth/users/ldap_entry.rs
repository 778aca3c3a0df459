//! What the LDAP backend reads and writes as text: filters filled with escaped values,
//! the attribute a user filter names, and search entries read without panicking.

use ldap3::asn1::StructureTag;

/// The attribute a user filter compares with `{user}` (`uid` in `(uid={user})`,
/// `sAMAccountName` in AD filters): its value is the account's own spelling.
pub(super) fn naming_attribute(filter: &str) -> Option<&str> {
    let before = &filter[..filter.find("={user})")?];
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.'))
        .map_or(0, |i| i + 1);
    let name = &before[start..];
    (!name.is_empty() && before[..start].ends_with('(')).then_some(name)
}

/// A search entry's DN and its text attributes (RFC 4511 §4.5.2 SearchResultEntry).
pub(super) struct Entry {
    pub(super) dn: String,
    pub(super) attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// The text values of attribute `name` (compared without case, as LDAP does).
    pub(super) fn values<'e>(&'e self, name: &'e str) -> impl Iterator<Item = &'e str> + 'e {
        self.attrs
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(String::as_str))
    }
}

/// Reads an entry as `SearchEntry::construct` does, but answers `None` where that
/// function panics (a DN that is not UTF-8, malformed BER): the directory's bytes are
/// network input. Values that are not UTF-8 are skipped.
pub(super) fn parse_entry(entry: &ldap3::ResultEntry) -> Option<Entry> {
    let text = |tag: StructureTag| String::from_utf8(tag.expect_primitive()?).ok();
    let mut parts = entry
        .0
        .clone()
        .match_id(4)?
        .expect_constructed()?
        .into_iter();
    let dn = text(parts.next()?)?;
    let mut attrs = Vec::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut attribute = attribute.expect_constructed()?.into_iter();
        let name = text(attribute.next()?)?;
        let values = attribute
            .next()?
            .expect_constructed()?
            .into_iter()
            .filter_map(text)
            .collect();
        attrs.push((name, values));
    }
    Some(Entry { dn, attrs })
}

/// Replaces each placeholder in one pass, so a value holding another placeholder's text
/// (a user named `{dn}`) is never expanded again.
pub(super) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'outer: while !rest.is_empty() {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::ldap_escape;

    #[test]
    fn placeholders_fill_once_and_values_are_escaped_by_callers() {
        let user = ldap_escape("*)(uid=*");
        assert_eq!(
            fill("(&(objectClass=person)(uid={user}))", &[("{user}", &user)]),
            "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            fill(
                "(|(member={dn})(memberUid={user}))",
                &[("{dn}", "{user}"), ("{user}", "bob")]
            ),
            "(|(member={user})(memberUid=bob))"
        );
    }

    #[test]
    fn the_naming_attribute_is_the_one_compared_with_user() {
        let cases = [
            ("(uid={user})", Some("uid")),
            ("(&(objectClass=inetOrgPerson)(uid={user}))", Some("uid")),
            (
                "(&(objectCategory=person)(sAMAccountName={user}))",
                Some("sAMAccountName"),
            ),
            ("(|(mail={user})(uid=x))", Some("mail")),
            ("(cn=*{user})", None),
            ("(uid={user}*)", None),
        ];
        for (filter, expected) in cases {
            assert_eq!(naming_attribute(filter), expected, "{filter}");
        }
    }
}
