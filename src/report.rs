//! Errors in log lines and `check` messages: the whole chain of causes, and a hint where
//! the cause is a certificate the edge refused.
//!
//! An HTTP client's error alone says little ("error sending request", "client error
//! (Connect)"): the cause an operator can act on is several sources down (the refused
//! certificate, the refused connection). Every message about a backend (LDAP, OIDC, the
//! http authenticator), the ACME CA, Redis or a registry node goes through [`chain`].

use std::error::Error;

/// `e` and each of its sources, joined by `": "`; a source whose text the message already
/// holds is skipped (many errors repeat their source in their own text). Ends with a hint
/// when the chain names a certificate rustls refused for a reason operators trip over
/// ([`certificate_hint`]).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause: Option<&(dyn Error + 'static)> = e.source();
    while let Some(current) = cause {
        append(&mut text, current);
        // An io::Error that wraps another error shows that error's text but gives its
        // *source* as its own: name the wrapped one too.
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            append(&mut text, inner);
        }
        cause = current.source();
    }
    match certificate_hint(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

fn append(text: &mut String, cause: &dyn Error) {
    let cause = cause.to_string();
    if !text.contains(&cause) {
        text.push_str(": ");
        text.push_str(&cause);
    }
}

/// What to do about a certificate rustls refused, in words, for the reasons that surprise
/// operators; `None` when `text` names none of them.
///
/// Matched on the text rustls gives them (`rustls::CertificateError`'s Display, and the
/// names of webpki's reasons that arrive as `Other`): the HTTP and LDAP clients wrap the
/// rustls error in boxed errors whose concrete types are gone by the time it is logged.
fn certificate_hint(text: &str) -> Option<&'static str> {
    const HINTS: [(&[&str], &str); 5] = [
        (
            &["CaUsedAsEndEntity"],
            "the server presents a CA certificate as its own (basicConstraints CA:TRUE, what \
             `openssl req -x509` makes by default); rustls refuses that where Go clients accept \
             it: give the server a certificate signed by that CA, and name the CA in `ca:`",
        ),
        (
            &["UnknownIssuer"],
            "the server's certificate is not signed by a CA the edge trusts: name its CA \
             certificate in this backend's `ca:`",
        ),
        (
            &["NotValidForName", "certificate not valid for name"],
            "the server's certificate does not name the host in the URL (subjectAltName)",
        ),
        (
            &["invalid peer certificate: Expired", "certificate expired:"],
            "the server's certificate has expired",
        ),
        (
            &["NotValidYet", "certificate not valid yet"],
            "the server's certificate is not valid yet (check both clocks)",
        ),
    ];
    HINTS
        .iter()
        .find(|(marks, _)| marks.iter().any(|mark| text.contains(mark)))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_reaches_inside_io_errors_and_names_the_fix() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        let text = chain(&Outer(io));
        assert!(
            text.starts_with("error sending request: invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
        assert!(text.contains("name its CA certificate"), "{text}");
    }

    #[test]
    fn repeated_sources_are_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("ldap: {0}")]
        struct Says(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&Says(io)), "ldap: refused");
    }
}
